package iso8583_test

import (
	"bytes"
	"testing"

	"storepay/gateway/iso8583"
)

// Nothing a switch sends makes the reader panic: every input is a message
// or a *BadInputError.
func FuzzReadAndUnpack(f *testing.F) {
	good, err := iso8583.Purchase{Trace: trace(42), Card: card, Amount: 1250, Currency: "USD"}.Fields(terminal)
	if err != nil {
		f.Fatal(err)
	}
	packed, err := good.Pack()
	if err != nil {
		f.Fatal(err)
	}
	frame, _ := iso8583.Frame(packed)
	f.Add(frame)
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, '0', '2'})
	f.Add(append([]byte{0, 40}, "0210F000000000000000000000000000000000"...))
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, err := iso8583.ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		fields, err := iso8583.Unpack(raw)
		if err != nil {
			return
		}
		if _, err := fields.Pack(); err != nil {
			t.Logf("unpacked but does not pack again: %v", err)
		}
	})
}
