<?php

use Illuminate\Support\Str;

// The settings order-expire reads from Laravel 9 and 10's stock config/cache.php (skeletons v9.5.2, v10.3.3).

return [
    'default' => env('CACHE_DRIVER', 'file'),

    'stores' => [
        'file' => ['driver' => 'file'],
        'redis' => [
            'driver' => 'redis',
            'connection' => 'cache',
            'lock_connection' => 'default',
        ],
    ],

    'prefix' => env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache_'),
];
