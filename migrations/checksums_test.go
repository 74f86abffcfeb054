package migrations_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"storepay/migrations"
)

// released are the migrations shipped in a release, with the SHA-256 of
// their text. A store's database records only a migration's version, so
// an edited released file would never run again on a store that applied
// it: stores would drift apart from a fresh install silently. A released
// migration is never edited; a change is a new file with a new number.
// Add a file here when the release that first carries it is cut.
var released = []struct{ name, sha256 string }{
	{"0001_init.sql", "022ba9a3ea631ebafa72ee166b3280659392956aa72751611bea3f0aafb32fb0"},
	{"0002_saf.sql", "2ca545c9b63889ffa1d64a608fd6482d645da3a2fdc91108c93b4250d53cf41c"},
	{"0003_reconcile.sql", "06f5473c1a5ee88de13d88eb15a30b14ca64c7301a9c924764e102d3db38fbe8"},
	{"0004_console.sql", "447b763578c745fa3fda5d21cea876952b6f88952c62f99967d70a25ed44fffc"},
	{"0005_saf_lanes.sql", "69c896e8daac8dfe700564cf574ec95435b194e86d20c54e1c5b7826f99c1487"},
	{"0006_keyed_request_hashes.sql", "24156f189871aa43acaf6df6ea4100ead96ced7b20a680b5f1b22893b5608b99"},
	{"0007_gateway_disabled.sql", "507bbe75a031106638a43e9285fdbea96abc7439dedd1598c8b8b5119a99b5df"},
	{"0008_reconcile_row_hash.sql", "d10ae7791949c2886f8d74d300cd14e8b5bbcfe2cf71db80b1957fa707ac6c66"},
	{"0009_payments_key_op.sql", "66b7b54cd4f2b1322ba5aa2ba5b2af9a0f4c622bcd7ba5e35c18af0e14330ede"},
	{"0010_payment_machine.sql", "d2e920f86a1e006bb8d5e735d7e587595d97c9dbb32546c587b1473980e26a22"},
	{"0011_iso8583.sql", "016debddc50dab752da9bd340b5749ac5fab30343a1ebae33b59265fd06bd6b4"},
	{"0020_operation_keys.sql", "8a689a1be4d76fb0fd985036b30865e6741f03d43a99cb73ece22a28c2e28569"},
}

func TestReleasedMigrationsAreNeverEdited(t *testing.T) {
	list, err := migrations.List()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, m := range list {
		byName[m.Name] = m.SQL
	}
	for _, r := range released {
		text, ok := byName[r.name]
		if !ok {
			t.Errorf("released migration %s is gone (renamed or deleted): stores that applied it would not know", r.name)
			continue
		}
		sum := sha256.Sum256([]byte(text))
		if got := hex.EncodeToString(sum[:]); got != r.sha256 {
			t.Errorf("released migration %s was edited (sha256 %s, released %s): put the change in a new migration", r.name, got, r.sha256)
		}
	}
}
