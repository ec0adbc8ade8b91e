package containerd

import (
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/membrane-net/membrane/api/client"
	"github.com/membrane-net/membrane/internal/testutil"
)

func TestX(t *testing.T) {
	_ = grpc.NewClient
	_ = runtimeapi.NewRuntimeServiceClient
	_ = client.New
	_ = testutil.RequirePrivileged
}
