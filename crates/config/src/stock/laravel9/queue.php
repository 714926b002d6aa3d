<?php

// The settings order-expire reads from Laravel 9 and 10's stock config/queue.php (skeletons v9.5.2, v10.3.3).

return [
    'default' => env('QUEUE_CONNECTION', 'sync'),

    'connections' => [
        'sync' => ['driver' => 'sync'],
        'database' => [
            'driver' => 'database',
            'table' => 'jobs',
            'queue' => 'default',
            'retry_after' => 90,
            'after_commit' => false,
        ],
        'beanstalkd' => ['driver' => 'beanstalkd', 'queue' => 'default'],
        'sqs' => ['driver' => 'sqs', 'queue' => env('SQS_QUEUE', 'default')],
        'redis' => [
            'driver' => 'redis',
            'connection' => 'default',
            'queue' => env('REDIS_QUEUE', 'default'),
            'retry_after' => 90,
            'block_for' => null,
            'after_commit' => false,
        ],
    ],
];
