<?php

use Illuminate\Support\Str;

// The settings order-expire reads from Laravel 8's stock config/cache.php (skeleton v8.6.12).

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

    'prefix' => env('CACHE_PREFIX', Str::slug(env('APP_NAME', 'laravel'), '_').'_cache'),
];
