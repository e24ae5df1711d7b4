// A reference for how Ollama's server decodes request bodies: Go's encoding/json (through a
// json.Decoder, as gin's ShouldBindJSON does) into structs shaped like the ones in Ollama's
// api/types.go. Reads a JSON array of {"type", "body"} cases on stdin and prints, for each, the
// error text or a projection of the decoded fields. Used by tests/sim/test_gojson.py when a Go
// toolchain is installed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strings"
	"time"
)

type ImageData []byte

type Duration struct{ time.Duration }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch t := v.(type) {
	case float64:
		if t < 0 {
			d.Duration = time.Duration(math.MaxInt64)
		} else {
			d.Duration = time.Duration(t * float64(time.Second))
		}
	case string:
		var err error
		if d.Duration, err = time.ParseDuration(t); err != nil {
			return err
		}
		if d.Duration < 0 {
			d.Duration = time.Duration(math.MaxInt64)
		}
	default:
		return fmt.Errorf("Unsupported type: '%s'", reflect.TypeOf(v))
	}
	return nil
}

type ThinkValue struct{ Value any }

func (t *ThinkValue) UnmarshalJSON(data []byte) error {
	var b bool
	if err := json.Unmarshal(data, &b); err == nil {
		t.Value = b
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		if s != "high" && s != "medium" && s != "low" && s != "max" {
			return fmt.Errorf("invalid think value: %q (must be \"high\", \"medium\", \"low\", \"max\", true, or false)", s)
		}
		t.Value = s
		return nil
	}
	return fmt.Errorf("think must be a boolean or string (\"high\", \"medium\", \"low\", \"max\", true, or false)")
}

type ToolCall struct {
	ID       string `json:"id"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

type Message struct {
	Role      string      `json:"role"`
	Content   string      `json:"content"`
	Images    []ImageData `json:"images"`
	ToolCalls []ToolCall  `json:"tool_calls"`
}

func (m *Message) UnmarshalJSON(b []byte) error {
	type Alias Message
	var a Alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*m = Message(a)
	m.Role = strings.ToLower(m.Role)
	return nil
}

type GenerateRequest struct {
	Model       string         `json:"model"`
	Prompt      string         `json:"prompt"`
	Stream      *bool          `json:"stream"`
	Raw         bool           `json:"raw"`
	KeepAlive   *Duration      `json:"keep_alive"`
	Images      []ImageData    `json:"images"`
	Options     map[string]any `json:"options"`
	Think       *ThinkValue    `json:"think"`
	TopLogprobs int            `json:"top_logprobs"`
}

type ChatRequest struct {
	Model       string         `json:"model"`
	Messages    []Message      `json:"messages"`
	Stream      *bool          `json:"stream"`
	KeepAlive   *Duration      `json:"keep_alive"`
	Options     map[string]any `json:"options"`
	Think       *ThinkValue    `json:"think"`
	TopLogprobs int            `json:"top_logprobs"`
}

type EmbedRequest struct {
	Model      string         `json:"model"`
	Input      any            `json:"input"`
	Truncate   *bool          `json:"truncate"`
	Dimensions int            `json:"dimensions"`
	Options    map[string]any `json:"options"`
}

type projection map[string]any

func images(list []ImageData) any {
	if list == nil {
		return nil
	}
	return len(list)
}

func common(p projection, stream *bool, keep *Duration, think *ThinkValue) {
	p["stream"] = stream
	if keep != nil {
		p["keep_alive_ns"] = int64(keep.Duration)
	} else {
		p["keep_alive_ns"] = nil
	}
	if think != nil {
		p["think"] = think.Value
	} else {
		p["think"] = nil
	}
}

func decode(kind string, body []byte) (projection, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	p := projection{}
	switch kind {
	case "generate":
		var r GenerateRequest
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		p["model"], p["prompt"], p["raw"], p["options"], p["top_logprobs"] = r.Model, r.Prompt, r.Raw, r.Options, r.TopLogprobs
		p["images"] = images(r.Images)
		common(p, r.Stream, r.KeepAlive, r.Think)
	case "chat":
		var r ChatRequest
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		p["model"], p["options"], p["top_logprobs"] = r.Model, r.Options, r.TopLogprobs
		var msgs []any
		for _, m := range r.Messages {
			calls := []any{}
			for _, c := range m.ToolCalls {
				calls = append(calls, map[string]any{"name": c.Function.Name, "arguments": c.Function.Arguments})
			}
			msgs = append(msgs, map[string]any{"role": m.Role, "content": m.Content, "images": images(m.Images), "tool_calls": calls})
		}
		p["messages"] = msgs
		common(p, r.Stream, r.KeepAlive, r.Think)
	case "embed":
		var r EmbedRequest
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		p["model"], p["input"], p["truncate"], p["dimensions"], p["options"] = r.Model, r.Input, r.Truncate, r.Dimensions, r.Options
	default:
		return nil, fmt.Errorf("unknown case type %q", kind)
	}
	return p, nil
}

func main() {
	var cases []struct {
		Type string `json:"type"`
		Body string `json:"body"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	out := []any{}
	for _, c := range cases {
		p, err := decode(c.Type, []byte(c.Body))
		switch {
		case errors.Is(err, io.EOF):
			out = append(out, map[string]any{"error": "missing request body"})
		case err != nil:
			out = append(out, map[string]any{"error": err.Error()})
		default:
			out = append(out, map[string]any{"ok": p})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		panic(err)
	}
}
