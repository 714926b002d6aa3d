<?php

use Illuminate\Support\Str;

// The settings order-expire reads from Laravel 13's own config/cache.php (framework v13.0.0 to
// v13.26.1). Laravel merges it under the app's config/cache.php, or uses it when the app has
// none. Laravel 13 hyphenates the default prefix (`laravel-cache-`; 12 wrote `laravel_cache_`).

return [
    'default' => env('CACHE_STORE', 'database'),

    'stores' => [
        'database' => ['driver' => 'database'],
        'file' => ['driver' => 'file'],
        'redis' => [
            'driver' => 'redis',
            'connection' => env('REDIS_CACHE_CONNECTION', 'cache'),
            'lock_connection' => env('REDIS_CACHE_LOCK_CONNECTION', 'default'),
        ],
    ],

    'prefix' => env('CACHE_PREFIX', Str::slug((string) env('APP_NAME', 'laravel')).'-cache-'),
];
