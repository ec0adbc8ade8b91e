package containerd

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"
)

// SandboxImage is the name the suite's pause image is imported under and
// the CRI plugin's sandbox_image.
const SandboxImage = "membrane.test/pause:1"

// ociDescriptor is an OCI content descriptor.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
}

type ociPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// writeSandboxImage packs the pause binary into an OCI image layout
// archive (what `ctr images import` reads) at path, by hand: one
// uncompressed layer holding /pause, the image config, the manifest and an
// index naming the image SandboxImage. Nothing is fetched.
func writeSandboxImage(pauseBinary, path string) error {
	pause, err := os.ReadFile(pauseBinary)
	if err != nil {
		return err
	}
	mtime := time.Unix(0, 0)

	// The layer: the root filesystem.
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	if err := lw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(pause)), Typeflag: tar.TypeReg, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := lw.Write(pause); err != nil {
		return err
	}
	if err := lw.Close(); err != nil {
		return err
	}

	blobs := map[string][]byte{}
	add := func(mediaType string, b []byte) ociDescriptor {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return ociDescriptor{MediaType: mediaType, Digest: d, Size: len(b)}
	}
	layerDesc := add("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	platform := ociPlatform{Architecture: runtime.GOARCH, OS: "linux"}
	config, _ := json.Marshal(map[string]any{
		"architecture": platform.Architecture,
		"os":           platform.OS,
		"created":      mtime.UTC().Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": []string{"/pause"}},
		// Uncompressed layer: its diff ID is its digest.
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	configDesc := add("application/vnd.oci.image.config.v1+json", config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        configDesc,
		"layers":        []ociDescriptor{layerDesc},
	})
	manifestDesc := add("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc.Platform = &platform
	manifestDesc.Annotations = map[string]string{
		// containerd's importer names the image after this annotation.
		"io.containerd.image.name":          SandboxImage,
		"org.opencontainers.image.ref.name": "1",
	}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []ociDescriptor{manifestDesc},
	})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	file := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: mtime}); err != nil {
			return err
		}
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", index); err != nil {
		return err
	}
	for d, b := range blobs {
		if err := file("blobs/sha256/"+d[len("sha256:"):], b); err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
