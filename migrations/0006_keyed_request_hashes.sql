-- Request hashes were plain SHA-256 of the request body, and a card
-- payment's body holds its card number: with the first six and last four
-- digits stored beside them, the number could be recovered by trying the
-- digits in between. Hashes are keyed under the card key now (HMAC); the
-- old ones are erased. An empty hash is taken as a repeat of the request.
UPDATE payments SET op_hash = '' WHERE op_hash <> '';
UPDATE orders SET op_hash = '' WHERE op_hash <> '';
UPDATE idempotency SET request_hash = '' WHERE request_hash <> '';
