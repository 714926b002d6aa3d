<?php

// The settings order-expire reads from Laravel 13's own config/app.php (framework v13.26.1), which
// Laravel merges under the app's config/app.php, or uses when the app has none.

return [
    'name' => env('APP_NAME', 'Laravel'),
    'timezone' => 'UTC',
];
