<?php

// order-expire asks the app's own Laravel for the configuration it reads, when a value it needs
// is written in PHP it does not evaluate. This boots Laravel only as far as its configuration:
// the Application, then its LoadEnvironmentVariables and LoadConfiguration bootstrappers (the
// .env, then the configuration cache or config/*.php, merged over the framework's own files from
// Laravel 11). No service provider is booted and nothing is connected to.
//
// Run as `php -- <app root> <.env path>` with this file on standard input. Prints
// `<?php return array(...);` (var_export, as `php artisan config:cache` writes it) with the PHP
// and Laravel versions and the `app`, `cache`, `database` and `queue` settings order-expire
// reads; on failure, one line on standard error and exit status 3.

error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED);

$root = $argv[1] ?? '';
$envFile = $argv[2] ?? '';

// A config file that prints something must not end up in the answer.
ob_start();
try {
    require $root.'/vendor/autoload.php';

    $app = new Illuminate\Foundation\Application($root);
    $app->useEnvironmentPath(dirname($envFile));
    $app->loadEnvironmentFrom(basename($envFile));
    $app->bootstrapWith([
        Illuminate\Foundation\Bootstrap\LoadEnvironmentVariables::class,
        Illuminate\Foundation\Bootstrap\LoadConfiguration::class,
    ]);

    $config = $app['config'];
    $answer = [
        'php' => PHP_VERSION,
        'laravel' => $app->version(),
        'config' => [
            'app' => ['timezone' => $config->get('app.timezone')],
            'cache' => [
                'default' => $config->get('cache.default'),
                'prefix' => $config->get('cache.prefix'),
                'stores' => $config->get('cache.stores'),
            ],
            'database' => [
                'default' => $config->get('database.default'),
                'connections' => $config->get('database.connections'),
                'redis' => $config->get('database.redis'),
            ],
            'queue' => [
                'default' => $config->get('queue.default'),
                'connections' => $config->get('queue.connections'),
            ],
        ],
    ];
} catch (Throwable $e) {
    ob_end_clean();
    $message = str_replace(["\r", "\n"], ' ', $e->getMessage());
    fwrite(STDERR, get_class($e).': '.$message.' in '.$e->getFile().':'.$e->getLine()."\n");
    exit(3);
}
ob_end_clean();

echo '<?php return ', var_export($answer, true), ';', PHP_EOL;
