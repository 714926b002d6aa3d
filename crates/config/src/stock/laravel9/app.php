<?php

// The settings order-expire reads from Laravel 9 and 10's stock config/app.php (skeletons v9.5.2, v10.3.3).

return [
    'name' => env('APP_NAME', 'Laravel'),
    'timezone' => 'UTC',
];
