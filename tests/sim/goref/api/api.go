// Package api declares request structs shaped like those of Ollama's api/types.go, so that Go
// names them in its errors as Ollama's server does (api.GenerateRequest, api.Alias).
package api

import (
	"encoding/json"
	"fmt"
	"math"
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
