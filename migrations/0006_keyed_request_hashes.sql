-- Request hashes were plain SHA-256 of the request body, and a card
-- payment's body holds its card number: with the first six and last four
-- digits stored beside them, the number could be recovered by trying the
-- digits in between. Hashes are keyed under the card key now (HMAC). The
-- orders' and payments' copies, kept for good, are erased: a repeat of such
-- a request is checked against the order or payment itself. The stored
-- answers keep theirs until they are pruned (72 hours), compared as made.
UPDATE payments SET op_hash = '' WHERE op_hash <> '';
UPDATE orders SET op_hash = '' WHERE op_hash <> '';
