<?php

// The settings order-expire reads from Laravel 12's own config/app.php (framework v12.67.0), which
// Laravel merges under the app's config/app.php, or uses when the app has none.

return [
    'name' => env('APP_NAME', 'Laravel'),
    'timezone' => 'UTC',
];
