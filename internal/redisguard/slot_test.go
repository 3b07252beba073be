package redisguard

import "testing"

// TestSlot checks Slot against CLUSTER KEYSLOT's answers.
func TestSlot(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want uint16
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"hello", 866},
		{"{foo}:lock", 12182},
		{"x{foo}y{bar}", 12182},
	} {
		if got := Slot(tt.key); got != tt.want {
			t.Errorf("Slot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}
