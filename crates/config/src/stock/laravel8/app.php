<?php

// The settings order-expire reads from Laravel 8's stock config/app.php (skeleton v8.6.12).

return [
    'name' => env('APP_NAME', 'Laravel'),
    'timezone' => 'UTC',
];
