package cells_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/hive/cell"

	"github.com/membrane-net/membrane/cells"
	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/cells/cniconfig"
	"github.com/membrane-net/membrane/cells/status"
)

// A custom agent that lists the serving cells itself is told why, rather
// than failing on a duplicate flag deep inside the hive.
func TestNewAgentHiveRefusesServingCells(t *testing.T) {
	for name, list := range map[string][]cell.Cell{
		"apiserver":          {status.Cell, apiserver.Cell},
		"cniconfig in group": {cell.Group(status.Cell, cniconfig.Cell)},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if msg := fmt.Sprint(recover()); !strings.Contains(msg, "leave apiserver.Cell and cniconfig.Cell out") {
					t.Errorf("NewAgentHive panicked with %q", msg)
				}
			}()
			cells.NewAgentHive(list...)
		})
	}
}
