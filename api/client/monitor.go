package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/membrane-net/membrane/api/models"
)

// Monitor subscribes to the datapath's events (GET /v1/monitor) that f
// selects. It returns once the agent accepted the subscription; a non-2xx
// answer is an *APIError. The stream lasts until ctx is cancelled, the
// stream is closed or the agent stops.
func (c *Client) Monitor(ctx context.Context, f models.MonitorFilter) (*MonitorStream, error) {
	path := "/v1/monitor"
	if q := f.Query().Encode(); q != "" {
		path += "?" + q
	}
	body, err := c.Stream(ctx, path)
	if err != nil {
		return nil, err
	}
	s := NewMonitorStream(body)
	s.body = body
	return s, nil
}

// MonitorStats returns the event stream's counters (GET /v1/monitor/stats).
func (c *Client) MonitorStats(ctx context.Context) (*models.MonitorStats, error) {
	var st models.MonitorStats
	if err := c.Get(ctx, "/v1/monitor/stats", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// MonitorStream reads an event stream: one models.MonitorEvent per line.
type MonitorStream struct {
	body   io.Closer // nil for a stream the caller owns
	sc     *bufio.Scanner
	record []byte
}

// NewMonitorStream reads the events of a stream in the format of
// GET /v1/monitor from r.
func NewMonitorStream(r io.Reader) *MonitorStream {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	return &MonitorStream{sc: sc}
}

// Next returns the next event, skipping blank lines; io.EOF once the
// stream ended.
func (s *MonitorStream) Next() (*models.MonitorEvent, error) {
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev models.MonitorEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("undecodable event from the agent: %w", err)
		}
		s.record = line
		return &ev, nil
	}
	if err := s.sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the event stream: %w", err)
	}
	return nil, io.EOF
}

// Record is the line of the event Next returned last, as the agent wrote
// it; it is valid until the next call to Next.
func (s *MonitorStream) Record() []byte { return s.record }

// Close ends a stream Monitor opened.
func (s *MonitorStream) Close() error {
	if s.body == nil {
		return nil
	}
	return s.body.Close()
}
