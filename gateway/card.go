package gateway

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strings"
	"time"
)

// Card validation errors. Their messages never contain the card number.
var (
	ErrInvalidCard = errors.New("card number is not valid")
	ErrExpiredCard = errors.New("card has expired")
)

// Validate checks the card number (digits only, 12 to 19 long, Luhn) and
// that the card has not expired by now (a card is valid through the last
// day of its expiry month).
func (c Card) Validate(now time.Time) error {
	if !LuhnValid(c.PAN) {
		return ErrInvalidCard
	}
	if c.ExpMonth < 1 || c.ExpMonth > 12 || c.ExpYear < 2000 || c.ExpYear > 2100 {
		return ErrInvalidCard
	}
	now = now.UTC()
	if c.ExpYear < now.Year() || (c.ExpYear == now.Year() && c.ExpMonth < int(now.Month())) {
		return ErrExpiredCard
	}
	return nil
}

// LuhnValid reports whether pan is 12 to 19 digits with a valid Luhn check
// digit.
func LuhnValid(pan string) bool {
	if len(pan) < 12 || len(pan) > 19 {
		return false
	}
	sum := 0
	double := false
	for i := len(pan) - 1; i >= 0; i-- {
		d := int(pan[i] - '0')
		if d < 0 || d > 9 {
			return false
		}
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// WithCheckDigit appends the Luhn check digit to a card number's digits:
// how test and bench card numbers are made.
func WithCheckDigit(digits string) string {
	sum := 0
	for i := 0; i < len(digits); i++ {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return digits + string(rune('0'+(10-sum%10)%10))
}

// Brand names the card scheme from the number's leading digits, or
// "unknown".
func (c Card) Brand() string {
	p := c.PAN
	switch {
	case strings.HasPrefix(p, "4"):
		return "visa"
	case hasPrefixRange(p, 2, 51, 55) || hasPrefixRange(p, 4, 2221, 2720):
		return "mastercard"
	case strings.HasPrefix(p, "34") || strings.HasPrefix(p, "37"):
		return "amex"
	case strings.HasPrefix(p, "6011") || strings.HasPrefix(p, "65") || hasPrefixRange(p, 3, 644, 649):
		return "discover"
	case hasPrefixRange(p, 4, 3528, 3589):
		return "jcb"
	}
	return "unknown"
}

func hasPrefixRange(p string, n, lo, hi int) bool {
	if len(p) < n {
		return false
	}
	v := 0
	for _, ch := range p[:n] {
		v = v*10 + int(ch-'0')
	}
	return v >= lo && v <= hi
}

// Vault seals card data for the short time storepay must hold it (a bank
// call in flight, a payment waiting in store-and-forward) and computes the
// keyed fingerprint that identifies a card without revealing it.
//
// Both keys are derived with HKDF from the store's card key
// (STOREPAY_CARD_KEY), so one secret serves both purposes without one
// key doing two jobs.
type Vault struct {
	aead   cipher.AEAD
	fpKey  []byte
	reqKey []byte
}

// ParseCardKey decodes a card key: exactly 64 hex digits (AES-256).
func ParseCardKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) != 64 {
		return nil, fmt.Errorf("card key must be 64 hex digits (32 bytes), got %d characters", len(s))
	}
	key, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("card key must be 64 hex digits (32 bytes): it is not hex")
	}
	return key, nil
}

// NewVault builds a vault from a 32-byte card key.
func NewVault(key []byte) (*Vault, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("card key must be 32 bytes, got %d", len(key))
	}
	encKey, err := hkdf.Key(sha256.New, key, nil, "storepay card encryption v1", 32)
	if err != nil {
		return nil, err
	}
	fpKey, err := hkdf.Key(sha256.New, key, nil, "storepay card fingerprint v1", 32)
	if err != nil {
		return nil, err
	}
	reqKey, err := hkdf.Key(sha256.New, key, nil, "storepay request hash v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Vault{aead: aead, fpKey: fpKey, reqKey: reqKey}, nil
}

// Seal encrypts c with AES-256-GCM. The ciphertext is bound to id (the
// payment id): it cannot be moved to another record.
func (v *Vault) Seal(id string, c Card) ([]byte, error) {
	plain, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, v.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return v.aead.Seal(nonce, nonce, plain, []byte(id)), nil
}

// Open decrypts what Seal sealed for id.
func (v *Vault) Open(id string, sealed []byte) (Card, error) {
	n := v.aead.NonceSize()
	if len(sealed) < n {
		return Card{}, errors.New("open card: sealed data too short")
	}
	plain, err := v.aead.Open(nil, sealed[:n], sealed[n:], []byte(id))
	if err != nil {
		return Card{}, errors.New("open card: wrong key or corrupted data")
	}
	var c Card
	if err := json.Unmarshal(plain, &c); err != nil {
		return Card{}, errors.New("open card: corrupted data")
	}
	return c, nil
}

// RequestHash returns a keyed hash for telling requests apart: requests
// carry card numbers, and an unkeyed hash of one could be reversed by
// trying every card number that matches the stored first six and last
// four digits.
func (v *Vault) RequestHash() hash.Hash { return hmac.New(sha256.New, v.reqKey) }

// RequestHashID names the key RequestHash uses, without revealing it: a
// hash made under another card key cannot be compared with one made now.
func (v *Vault) RequestHashID() string {
	m := hmac.New(sha256.New, v.reqKey)
	m.Write([]byte("storepay request hash key id"))
	return hex.EncodeToString(m.Sum(nil)[:4])
}

// Fingerprint identifies a card number without revealing it: an HMAC under
// a key only this store holds, so it cannot be reversed by trying every
// number.
func (v *Vault) Fingerprint(pan string) string {
	m := hmac.New(sha256.New, v.fpKey)
	m.Write([]byte(pan))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// panLike matches a run of at least 13 digits, single spaces or dashes
// allowed between them, as a card number is written (cardIn then finds
// one in it).
var panLike = regexp.MustCompile(`\d(?:[ -]?\d){12,}`)

// MaskPANs replaces every card number in s (13 to 19 digits, single
// spaces or dashes allowed between them, passing the Luhn check and
// starting with 2 to 6 as the card networks' numbers do) with its first
// six and last four digits. Text from outside (a bank's report, a search
// box) may carry one, and storepay never shows or stores a full card
// number. Left alone: long numeric references that are not card numbers
// (a bank's 16-digit reference starting with 8), and digits inside an id
// such as pay_01a200de6d007d1da61998741005244f (a prefix, an underscore,
// then hex with letters in it).
func MaskPANs(s string) string {
	if len(s) < 13 {
		return s
	}
	var out strings.Builder
	last := 0
	for _, loc := range panLike.FindAllStringIndex(s, -1) {
		if insideID(s, loc[0], loc[1]) {
			continue
		}
		for _, c := range cardsIn(s[loc[0]:loc[1]]) {
			from, to := loc[0]+c[0], loc[0]+c[1]
			d := onlyDigits(s[from:to])
			out.WriteString(s[last:from])
			out.WriteString(d[:6] + strings.Repeat("*", len(d)-10) + d[len(d)-4:])
			last = to
		}
	}
	if last == 0 {
		return s
	}
	out.WriteString(s[last:])
	return out.String()
}

// cardsIn finds the card numbers in m, a run of digit groups: from each
// group, the longest stretch of whole groups that is one (a date or a
// quantity written next to a card number joins its run, and so may a
// second card). Linear: a stretch is never longer than 19 digits.
func cardsIn(m string) [][2]int {
	type group struct{ from, to int }
	var gs []group
	for i := 0; i < len(m); {
		if m[i] < '0' || m[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(m) && m[j] >= '0' && m[j] <= '9' {
			j++
		}
		gs = append(gs, group{i, j})
		i = j
	}
	var found [][2]int
	for i := 0; i < len(gs); {
		best := -1
		var d []byte
		for j := i; j < len(gs); j++ {
			d = append(d, m[gs[j].from:gs[j].to]...)
			if len(d) > 19 {
				break
			}
			if len(d) >= 13 && d[0] >= '2' && d[0] <= '6' && LuhnValid(string(d)) {
				best = j
			}
		}
		if best < 0 {
			i++
			continue
		}
		found = append(found, [2]int{gs[i].from, gs[best].to})
		i = best + 1
	}
	return found
}

func onlyDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

// insideID reports whether s[from:to] is part of an id: a word of the
// shape prefix_hex, 32 hex digits with a letter among them.
func insideID(s string, from, to int) bool {
	i, j := from, to
	for i > 0 && wordByte(s[i-1]) {
		i--
	}
	for j < len(s) && wordByte(s[j]) {
		j++
	}
	word := s[i:j]
	u := strings.LastIndexByte(word, '_')
	if u <= 0 || i+u >= from {
		return false // no prefix, or the digits are not after the underscore
	}
	hex, letter := word[u+1:], false
	if len(hex) != 32 { // storepay's ids: a prefix, _, a UUID's 32 hex digits
		return false
	}
	for k := 0; k < len(hex); k++ {
		c := hex[k]
		switch {
		case c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F':
			letter = true
		case c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return letter
}

func wordByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}
