<?php

use Illuminate\Support\Str;

// The settings order-expire reads from Laravel 11's and 12's own config/cache.php (framework
// v11.56.0; v12.67.0 only adds a `(string)` cast before Str::slug, which changes no value). Laravel
// merges it under the app's config/cache.php, or uses it when the app has none.

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

    'prefix' => env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache_'),
];
