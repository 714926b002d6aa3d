<?php

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

/**
 * order-expire's outbox for a redis queue (ORDER_EXPIRE_DISPATCH with a redis queue connection):
 * the job payload of each cancelled order is written here in the same transaction as the
 * cancellation, then pushed to the queue and deleted. A crash between the commit and the push
 * leaves the row here for the next drain, so no job is lost. Copy this file into
 * database/migrations and run `php artisan migrate`.
 */
class CreateOrderExpireOutboxTable extends Migration
{
    public function up()
    {
        Schema::create('order_expire_outbox', function (Blueprint $table) {
            $table->bigIncrements('id');
            $table->unsignedBigInteger('order_id');
            $table->longText('payload');
            $table->unsignedInteger('created_at');
        });
    }

    public function down()
    {
        Schema::dropIfExists('order_expire_outbox');
    }
}
