package saf

import (
	"testing"
	"time"
)

func TestValidHotCard(t *testing.T) {
	for s, want := range map[string]bool{
		"400000******9979":    true,
		"555555******4444":    true,
		"371449*****8431":     true,
		"4000000000009979":    false, // a full card number never belongs in a hot list
		"400000******997":     false,
		"40000a******9979":    false,
		"400000*****x9979":    false,
		"":                    false,
		"400000*********9979": true,
	} {
		if got := ValidHotCard(s); got != want {
			t.Errorf("ValidHotCard(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestHotCardMatchesFirstSixLastFour(t *testing.T) {
	q := &Queue{Rules: Rules{HotCards: []string{"400000******9979"}}}
	if !q.hotCard("400000", "9979") || q.hotCard("400000", "9978") || q.hotCard("400001", "9979") {
		t.Fatal("hot list matching by first six and last four is wrong")
	}
}

func TestRuleDefaults(t *testing.T) {
	r := Rules{FloorLimit: 1000}.withDefaults()
	if r.VelocityCount != 0 || r.VelocityAmount != 0 || r.VelocityWindow != 24*time.Hour || r.MaxAge != 72*time.Hour {
		t.Fatalf("defaults: %+v", r)
	}
	p := ForwardPolicy{}.withDefaults()
	if p.Concurrency != 1 || p.RatePerSecond != 20 || p.MaxAttempts != 10 || p.Interval != time.Second {
		t.Fatalf("forward defaults: %+v", p)
	}
}
