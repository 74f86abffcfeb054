-- The chain's hot list, pushed by headquarters (a card reported stolen at
-- one store is refused offline at every store within seconds), beside the
-- config's offline.hot_cards. An entry is the card's first six and last
-- four digits: a hot list never needs a full card number.
CREATE TABLE hot_cards (
    entry     TEXT PRIMARY KEY,  -- first six and last four digits
    masked    TEXT NOT NULL,     -- as given: 400000******9979
    actor     TEXT NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    added_at  TEXT NOT NULL
);
