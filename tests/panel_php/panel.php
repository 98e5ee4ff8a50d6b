<?php
// A downstream SMM panel as the common PHP panel scripts (SmartPanel class) are written, with
// panelgate as its API provider. It reads replies the way they do: `json_decode` into objects
// (`json_decode($body)`) or arrays (`json_decode($body, true)`), fields by name, and any
// `error` key as the final word on an order. Money is PHP floats rounded to 4 decimals, as
// such panels keep it; their users' balances are the panel's, not panelgate's.
//
// Usage: php panel.php STATE COMMAND [ARGS...]   (STATE: the panel's database, a JSON file)
//   provider URL KEY             set the API provider (a panel owner pasting URL and key)
//   user NAME BALANCE            create a panel user with a balance
//   import PERCENT               import every service at the provider's rate + PERCENT %
//   order USER SERVICE LINK QUANTITY [RUNS INTERVAL]
//                                charge the user, place the order; an error refunds the user
//   sync                         poll every open order in one multi `status` (orders=1,2,3)
//   sync-one ORDER               poll one open order with a single `status`
//   cancel ORDER                 ask the provider to cancel an order
//   provider-balance             the panel's balance at the provider
//   show                         print the panel's database
// Every command prints one JSON object; a failure prints to stderr and exits 1.

declare(strict_types=1);

/** The provider API class these scripts ship: form POSTs of key/action/…, decoded replies. */
final class Api
{
    public function __construct(private string $url, private string $key)
    {
    }

    public function services(): mixed
    {
        return json_decode($this->connect(['action' => 'services']), true);
    }

    public function order(array $data): mixed
    {
        return json_decode($this->connect(array_merge(['action' => 'add'], $data)));
    }

    public function status(string $order): mixed
    {
        return json_decode($this->connect(['action' => 'status', 'order' => $order]));
    }

    public function multiStatus(array $orders): mixed
    {
        return json_decode($this->connect(['action' => 'status', 'orders' => implode(',', $orders)]), true);
    }

    public function cancel(array $orders): mixed
    {
        return json_decode($this->connect(['action' => 'cancel', 'orders' => implode(',', $orders)]));
    }

    public function balance(): mixed
    {
        return json_decode($this->connect(['action' => 'balance']));
    }

    private function connect(array $post): string
    {
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/x-www-form-urlencoded\r\n",
            'content' => http_build_query(array_merge(['key' => $this->key], $post)),
            // Like curl, hand back the body of a 4xx/5xx too: the script reads its `error`.
            'ignore_errors' => true,
            'timeout' => 30,
        ]]);
        $body = @file_get_contents($this->url, false, $context);
        if ($body === false) {
            fail("no reply from the provider");
        }
        return $body;
    }
}

function fail(string $why): never
{
    fwrite(STDERR, "panel: $why\n");
    exit(1);
}

function money(float $amount): float
{
    return round($amount, 4);
}

function load(string $path): array
{
    if (!file_exists($path)) {
        return ['provider' => null, 'services' => [], 'users' => [], 'orders' => []];
    }
    return json_decode(file_get_contents($path), true);
}

function save(string $path, array $db): void
{
    file_put_contents($path, json_encode($db, JSON_PRETTY_PRINT | JSON_PRESERVE_ZERO_FRACTION));
}

function api(array $db): Api
{
    $db['provider'] ?? fail('no provider set');
    return new Api($db['provider']['url'], $db['provider']['key']);
}

function import(array &$db, float $percent): array
{
    $list = api($db)->services();
    if (!is_array($list) || isset($list['error'])) {
        fail('services: ' . json_encode($list));
    }
    foreach ($list as $s) {
        $db['services'][(string) $s['service']] = [
            'name' => $s['name'],
            'type' => $s['type'],
            'category' => $s['category'],
            'provider_rate' => (float) $s['rate'],
            'rate' => money((float) $s['rate'] * (1 + $percent / 100)),
            'min' => (int) $s['min'],
            'max' => (int) $s['max'],
            'dripfeed' => !empty($s['dripfeed']),
        ];
    }
    return ['imported' => count($list)];
}

/** Charges the user first, as the scripts do, then places the order upstream. */
function order(array &$db, array $args): array
{
    [$user, $service, $link, $quantity] = $args;
    $runs = (int) ($args[4] ?? 1);
    $s = $db['services'][$service] ?? fail("no service $service");
    if ((int) $quantity < $s['min'] || (int) $quantity > $s['max']) {
        fail("quantity outside $s[min]..$s[max]");
    }
    $charge = money($s['rate'] * (int) $quantity * $runs / 1000);
    if ($db['users'][$user] < $charge) {
        fail("$user cannot pay $charge");
    }
    $db['users'][$user] = money($db['users'][$user] - $charge);
    $o = [
        'id' => count($db['orders']) + 1, 'user' => $user, 'service' => $service,
        'quantity' => (int) $quantity, 'runs' => $runs, 'runs_done' => null, 'charge' => $charge,
        'refunded' => 0.0, 'provider_order' => null, 'status' => 'Pending', 'remains' => null,
        'start_count' => null, 'note' => null,
    ];
    $fields = ['service' => $service, 'link' => $link, 'quantity' => $quantity];
    if ($runs > 1) {
        $fields += ['runs' => $runs, 'interval' => $args[5]];
    }
    $reply = api($db)->order($fields);
    if (isset($reply->order)) {
        $o['provider_order'] = (string) $reply->order;
    } else {
        // Refused: the order fails and the user gets the charge back.
        $o['status'] = 'Fail';
        $o['note'] = $reply->error ?? 'no reply';
        refund($db, $o, $charge);
    }
    $db['orders'][] = $o;
    return $o;
}

function refund(array &$db, array &$o, float $amount): void
{
    $amount = money(min($amount, $o['charge'] - $o['refunded']));
    $o['refunded'] = money($o['refunded'] + $amount);
    $db['users'][$o['user']] = money($db['users'][$o['user']] + $amount);
}

/** Applies one status reply (an array, whichever way it was decoded) to a local order. */
function apply(array &$db, array &$o, array $st): void
{
    if (isset($st['error'])) {
        // Final: the order is failed and never polled again.
        $o['status'] = 'Fail';
        $o['note'] = $st['error'];
        return;
    }
    $o['status'] = $st['status'];
    $o['remains'] = (int) $st['remains'];
    $o['start_count'] = (int) $st['start_count'];
    $delivered_runs = $o['runs'];
    if ($o['runs'] > 1) {
        // A drip-feed: the provider says how many runs went out; no `runs`, none did.
        $delivered_runs = (int) ($st['runs'] ?? 0);
        $o['runs_done'] = $delivered_runs;
    }
    if ($st['status'] === 'Canceled') {
        refund($db, $o, $o['charge']);
    } elseif ($st['status'] === 'Partial') {
        $ordered = $o['quantity'] * $o['runs'];
        $share = $delivered_runs === 0 ? 1.0 : $o['remains'] / $ordered;
        refund($db, $o, $o['charge'] * $share);
    }
}

function open_orders(array $db): array
{
    $open = [];
    foreach ($db['orders'] as $i => $o) {
        if (!in_array($o['status'], ['Completed', 'Partial', 'Canceled', 'Fail'], true)) {
            $open[$i] = $o['provider_order'];
        }
    }
    return $open;
}

/** One multi `status` for every open order, decoded into arrays. */
function sync(array &$db): array
{
    $open = open_orders($db);
    if ($open === []) {
        return ['polled' => []];
    }
    $replies = api($db)->multiStatus(array_values($open));
    if (!is_array($replies) || isset($replies['error'])) {
        fail('status: ' . json_encode($replies));
    }
    foreach ($open as $i => $provider_order) {
        apply($db, $db['orders'][$i], $replies[$provider_order] ?? ['error' => 'missing']);
    }
    return ['polled' => array_values($open)];
}

/** One single `status`, decoded into an object and read field by field. */
function sync_one(array &$db, int $id): array
{
    $i = $id - 1;
    $o = $db['orders'][$i] ?? fail("no order $id");
    if (!in_array($i, array_keys(open_orders($db)), true)) {
        return ['polled' => []];
    }
    $st = api($db)->status($o['provider_order']);
    $fields = isset($st->error) ? ['error' => $st->error] : [
        'status' => $st->status, 'remains' => $st->remains, 'start_count' => $st->start_count,
    ];
    if (isset($st->runs)) {
        $fields['runs'] = $st->runs;
    }
    apply($db, $db['orders'][$i], $fields);
    return ['polled' => [$o['provider_order']]];
}

function cancel(array $db, int $id): array
{
    $o = $db['orders'][$id - 1] ?? fail("no order $id");
    $reply = api($db)->cancel([$o['provider_order']]);
    $item = $reply[0] ?? fail('cancel: ' . json_encode($reply));
    if (is_object($item->cancel) && isset($item->cancel->error)) {
        fail('cancel refused: ' . $item->cancel->error);
    }
    return ['cancel' => $item->cancel];
}

[$self, $path, $command] = array_pad($argv, 3, null);
$command ?? fail('usage: php panel.php STATE COMMAND [ARGS...]');
$args = array_slice($argv, 3);
$db = load($path);
$out = match ($command) {
    'provider' => ['provider' => ($db['provider'] = ['url' => $args[0], 'key' => $args[1]])['url']],
    'user' => ['user' => $db['users'][$args[0]] = money((float) $args[1])],
    'import' => import($db, (float) $args[0]),
    'order' => order($db, $args),
    'sync' => sync($db),
    'sync-one' => sync_one($db, (int) $args[0]),
    'cancel' => cancel($db, (int) $args[0]),
    'provider-balance' => (array) api($db)->balance(),
    'show' => $db,
    default => fail("unknown command $command"),
};
save($path, $db);
echo json_encode($out, JSON_PRESERVE_ZERO_FRACTION), "\n";
