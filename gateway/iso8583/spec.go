package iso8583

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"

	moov "github.com/moov-io/iso8583"
	"github.com/moov-io/iso8583/encoding"
	"github.com/moov-io/iso8583/field"
	"github.com/moov-io/iso8583/padding"
	"github.com/moov-io/iso8583/prefix"
	"github.com/moov-io/iso8583/specs"
)

// Spec is the profile's message spec: moov-io's specs.Spec87ASCII (ASCII
// MTI and fields, hex-ASCII bitmap) plus field 70, which that spec lacks
// (numeric, fixed 3 digits), and a space padder on the fixed-length
// alphanumeric fields the profile uses (37, 38, 39, 41 and 42), so that
// "Y3" goes out as "Y3    " and comes back as "Y3".
//
// The bitmap is Spec87ASCII's as it is: always 32 hex characters (one
// 128-bit bitmap) with bit 1 left clear even when field 70 or 90 is
// present. That is not the textbook 16-character primary bitmap with a
// secondary one announced by bit 1, but it is what the contract names,
// and every peer built on the same spec writes and reads it that way.
var Spec = newSpec()

// alphanumeric are the fixed-length alphanumeric fields of the profile:
// left-justified and padded with spaces on the wire.
var alphanumeric = []int{37, 38, 39, 41, 42}

func newSpec() *moov.MessageSpec {
	fields := maps.Clone(specs.Spec87ASCII.Fields)
	for _, id := range alphanumeric {
		s := *specs.Spec87ASCII.Fields[id].Spec() // a copy: the library's spec stays untouched
		s.Pad = padding.Right(' ')
		fields[id] = field.NewString(&s)
	}
	fields[70] = field.NewNumeric(&field.Spec{
		Length:      3,
		Description: "Network Management Information Code",
		Enc:         encoding.ASCII,
		Pref:        prefix.ASCII.Fixed,
		Pad:         padding.Left('0'),
	})
	return &moov.MessageSpec{Name: "storepay ISO 8583 profile v1 (Spec87ASCII + field 70)", Fields: fields}
}

// HeaderLength is the length of the frame header: the length of the
// message that follows, 2 bytes, big-endian binary.
const HeaderLength = 2

// MaxMessageLength is the longest message [Spec] can produce: MTI, bitmap
// and every field of the spec at its maximum length. A length header
// above it is bad input, refused before the message is read.
var MaxMessageLength = maxPackedLength(Spec)

// maxPackedLength adds up what every field of spec takes on the wire at
// its maximum length (one 128-bit bitmap included), as the unpacker reads
// it: the length prefix's digits, then the encoded value.
func maxPackedLength(spec *moov.MessageSpec) int {
	n := 0
	for id, f := range spec.Fields {
		s := f.Spec()
		enc, err := s.Enc.Encode(make([]byte, s.Length))
		if err != nil {
			panic(fmt.Sprintf("iso8583: spec field %d: %v", id, err))
		}
		// Inspect names the prefix: "ASCII.Fixed", "ASCII.LL", ...
		_, kind, _ := strings.Cut(s.Pref.Inspect(), ".")
		n += strings.Count(kind, "L") + len(enc)
	}
	return n
}

// Reasons for bad input, as counted by the storepay.iso8583.bad_input
// counter and carried by [BadInputError].
const (
	// ReasonBadLength: a length header of zero, or a frame cut short.
	ReasonBadLength = "bad_length"
	// ReasonOversize: a length header above [MaxMessageLength].
	ReasonOversize = "oversize"
	// ReasonMalformed: a message that does not unpack under [Spec], has
	// bytes left over after its last field, or breaks the profile's
	// formats (a non-numeric amount, an MTI of letters, ...).
	ReasonMalformed = "malformed"
	// ReasonUnknownMTI: a well-formed message of a type the receiver
	// does not handle.
	ReasonUnknownMTI = "unknown_mti"
	// ReasonUnsolicited: an answer to no request: its STAN and terminal
	// were never sent, or their answer already came.
	ReasonUnsolicited = "unsolicited"
)

// BadInputError is input from the peer that breaks the profile. The
// connection it came on can no longer be trusted: it is dropped.
type BadInputError struct {
	Reason string // one of the Reason constants
	Err    error
}

func (e *BadInputError) Error() string {
	if e.Err == nil {
		return "bad input: " + e.Reason
	}
	return "bad input: " + e.Reason + ": " + e.Err.Error()
}

func (e *BadInputError) Unwrap() error { return e.Err }

func badInput(reason string, format string, args ...any) *BadInputError {
	return &BadInputError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReadFrame reads one framed message from r: the 2-byte length header,
// then that many bytes. A header of zero or above [MaxMessageLength] is a
// *BadInputError, returned without reading further; a clean end of input
// before the header is io.EOF.
func ReadFrame(r io.Reader) ([]byte, error) {
	var h [HeaderLength]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &BadInputError{Reason: ReasonBadLength, Err: errors.New("frame header cut short")}
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	switch {
	case n == 0:
		return nil, badInput(ReasonBadLength, "length header of 0")
	case n > MaxMessageLength:
		return nil, badInput(ReasonOversize, "length header of %d above the spec's %d", n, MaxMessageLength)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &BadInputError{Reason: ReasonBadLength, Err: fmt.Errorf("message cut short of its %d-byte length header", n)}
		}
		return nil, err
	}
	return msg, nil
}

// Frame returns msg preceded by its length header, in one slice, so that
// a message goes to the socket in one write. msg must not be longer than
// [MaxMessageLength].
func Frame(msg []byte) ([]byte, error) {
	if len(msg) == 0 || len(msg) > MaxMessageLength {
		return nil, fmt.Errorf("iso8583: message of %d bytes cannot be framed (1 to %d)", len(msg), MaxMessageLength)
	}
	out := make([]byte, HeaderLength, HeaderLength+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	return append(out, msg...), nil
}

// ReadLengthHeader and WriteLengthHeader are the frame header as the
// connection library's MessageLengthReader and MessageLengthWriter. Both
// ends here read and write whole frames themselves ([ReadFrame], [Frame]);
// these are what the library is given for completeness.
func ReadLengthHeader(r io.Reader) (int, error) {
	var h [HeaderLength]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	return int(binary.BigEndian.Uint16(h[:])), nil
}

// WriteLengthHeader: see [ReadLengthHeader].
func WriteLengthHeader(w io.Writer, n int) (int, error) {
	if n > MaxMessageLength {
		return 0, fmt.Errorf("iso8583: message of %d bytes above the spec's %d", n, MaxMessageLength)
	}
	var h [HeaderLength]byte
	binary.BigEndian.PutUint16(h[:], uint16(n))
	return w.Write(h[:])
}
