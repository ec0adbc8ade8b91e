// Package clip quotes user input for error messages without echoing all of
// it: a 10,000-character label key or CNI_ARGS pair would otherwise come
// back whole in the error, in the agent's log and in the runtime's events.
package clip

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Max is how many bytes of an input an error message shows.
const Max = 64

// Quote is s quoted (as %q would), cut after Max bytes, at a character
// boundary, with the length of the whole input said.
func Quote(s string) string {
	if len(s) <= Max {
		return strconv.Quote(s)
	}
	cut := Max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
