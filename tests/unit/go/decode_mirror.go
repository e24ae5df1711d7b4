// decode_mirror decodes request bodies the way Ollama's server does (gin's ShouldBindJSON: a
// json.Decoder reading one value into the route's struct) and prints what the struct holds, so the
// tests can compare corral.protocol.body with Go's encoding/json.
//
// The structs mirror the fields and Go types of Ollama's api/types.go and openai/openai.go. Types
// with their own UnmarshalJSON there are mirrored where the rule matters (api.Message lower-cases its
// role after decoding into a fresh value) and kept raw where Corral does not read them.
//
// Protocol: one request per stdin line, "<route> <base64 body>"; one JSON line per answer on stdout,
// {"ok":true,"v":<the struct>} or {"ok":false,"err":"..."}. No omitempty: every field is printed.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"
)

// Duration accepts what api.Duration.UnmarshalJSON accepts (seconds, or a Go duration string) and
// prints the JSON it was given.
type Duration struct{ raw json.RawMessage }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch t := v.(type) {
	case float64:
	case string:
		if _, err := time.ParseDuration(t); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported type %T", v)
	}
	d.raw = append(json.RawMessage(nil), b...)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return d.raw, nil }

// Think accepts what api.ThinkValue.UnmarshalJSON accepts.
type Think struct{ Value any }

func (t *Think) UnmarshalJSON(b []byte) error {
	var v bool
	if err := json.Unmarshal(b, &v); err == nil {
		t.Value = v
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "high" && s != "medium" && s != "low" && s != "max" {
			return fmt.Errorf("invalid think value: %q", s)
		}
		t.Value = s
		return nil
	}
	return fmt.Errorf("think must be a boolean or string")
}

func (t Think) MarshalJSON() ([]byte, error) { return json.Marshal(t.Value) }

type ToolCallFunction struct {
	Index     int             `json:"index"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

type ToolCall struct {
	ID       string           `json:"id"`
	Function ToolCallFunction `json:"function"`
}

type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking"`
	Images     [][]byte   `json:"images"`
	ToolCalls  []ToolCall `json:"tool_calls"`
	ToolName   string     `json:"tool_name"`
	ToolCallID string     `json:"tool_call_id"`
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

type ToolFunctionParameters struct {
	Type       string           `json:"type"`
	Defs       any              `json:"$defs"`
	Items      any              `json:"items"`
	Required   []string         `json:"required"`
	Properties *json.RawMessage `json:"properties"`
}

type ToolFunction struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description"`
	Parameters  ToolFunctionParameters `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items"`
	Function ToolFunction `json:"function"`
}

type GenerateRequest struct {
	Model       string          `json:"model"`
	Prompt      string          `json:"prompt"`
	Suffix      string          `json:"suffix"`
	System      string          `json:"system"`
	Template    string          `json:"template"`
	Context     []int           `json:"context"`
	Stream      *bool           `json:"stream"`
	Raw         bool            `json:"raw"`
	Format      json.RawMessage `json:"format"`
	KeepAlive   *Duration       `json:"keep_alive"`
	Images      [][]byte        `json:"images"`
	Options     map[string]any  `json:"options"`
	Think       *Think          `json:"think"`
	Truncate    *bool           `json:"truncate"`
	Shift       *bool           `json:"shift"`
	DebugRender bool            `json:"_debug_render_only"`
	Logprobs    bool            `json:"logprobs"`
	TopLogprobs int             `json:"top_logprobs"`
}

type ChatRequest struct {
	Model       string          `json:"model"`
	Messages    []Message       `json:"messages"`
	Stream      *bool           `json:"stream"`
	Format      json.RawMessage `json:"format"`
	KeepAlive   *Duration       `json:"keep_alive"`
	Tools       []Tool          `json:"tools"`
	Options     map[string]any  `json:"options"`
	Think       *Think          `json:"think"`
	Truncate    *bool           `json:"truncate"`
	Shift       *bool           `json:"shift"`
	DebugRender bool            `json:"_debug_render_only"`
	Logprobs    bool            `json:"logprobs"`
	TopLogprobs int             `json:"top_logprobs"`
}

type EmbedRequest struct {
	Model      string         `json:"model"`
	Input      any            `json:"input"`
	KeepAlive  *Duration      `json:"keep_alive"`
	Truncate   *bool          `json:"truncate"`
	Dimensions int            `json:"dimensions"`
	Options    map[string]any `json:"options"`
}

type ShowRequest struct {
	Model    string         `json:"model"`
	System   string         `json:"system"`
	Template string         `json:"template"`
	Verbose  bool           `json:"verbose"`
	Options  map[string]any `json:"options"`
	Name     string         `json:"name"`
}

type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type OpenAIToolCall struct {
	ID       string `json:"id"`
	Index    int    `json:"index"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type OpenAIMessage struct {
	Role       string           `json:"role"`
	Content    any              `json:"content"`
	Reasoning  string           `json:"reasoning"`
	ToolCalls  []OpenAIToolCall `json:"tool_calls"`
	Name       string           `json:"name"`
	ToolCallID string           `json:"tool_call_id"`
}

type JsonSchema struct {
	Schema json.RawMessage `json:"schema"`
}

type ResponseFormat struct {
	Type       string      `json:"type"`
	JsonSchema *JsonSchema `json:"json_schema"`
}

type Reasoning struct {
	Effort string `json:"effort"`
}

type ChatCompletionRequest struct {
	Model            string          `json:"model"`
	Messages         []OpenAIMessage `json:"messages"`
	Stream           bool            `json:"stream"`
	StreamOptions    *StreamOptions  `json:"stream_options"`
	MaxTokens        *int            `json:"max_tokens"`
	Seed             *int            `json:"seed"`
	Stop             any             `json:"stop"`
	Temperature      *float64        `json:"temperature"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	TopP             *float64        `json:"top_p"`
	ResponseFormat   *ResponseFormat `json:"response_format"`
	Tools            []Tool          `json:"tools"`
	Reasoning        *Reasoning      `json:"reasoning"`
	ReasoningEffort  *string         `json:"reasoning_effort"`
	Logprobs         *bool           `json:"logprobs"`
	TopLogprobs      int             `json:"top_logprobs"`
	DebugRender      bool            `json:"_debug_render_only"`
}

type CompletionRequest struct {
	Model            string         `json:"model"`
	Prompt           string         `json:"prompt"`
	FrequencyPenalty float32        `json:"frequency_penalty"`
	MaxTokens        *int           `json:"max_tokens"`
	PresencePenalty  float32        `json:"presence_penalty"`
	Seed             *int           `json:"seed"`
	Stop             any            `json:"stop"`
	Stream           bool           `json:"stream"`
	StreamOptions    *StreamOptions `json:"stream_options"`
	Temperature      *float32       `json:"temperature"`
	TopP             float32        `json:"top_p"`
	Suffix           string         `json:"suffix"`
	Logprobs         *int           `json:"logprobs"`
	DebugRender      bool           `json:"_debug_render_only"`
}

type OpenAIEmbedRequest struct {
	Input          any    `json:"input"`
	Model          string `json:"model"`
	Dimensions     int    `json:"dimensions"`
	EncodingFormat string `json:"encoding_format"`
}

func target(route string) any {
	switch route {
	case "/api/generate":
		return &GenerateRequest{}
	case "/api/chat":
		return &ChatRequest{}
	case "/api/embed":
		return &EmbedRequest{}
	case "/api/show":
		return &ShowRequest{}
	case "/v1/chat/completions":
		return &ChatCompletionRequest{}
	case "/v1/completions":
		return &CompletionRequest{}
	case "/v1/embeddings":
		return &OpenAIEmbedRequest{}
	}
	return nil
}

// fields describes a struct type as {json tag: nested description or null}, for checking that the
// Python side knows the same fields.
func fields(t reflect.Type) any {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.NumMethod() > 0 {
		return nil
	}
	out := map[string]any{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		out[tag] = fields(f.Type)
	}
	return out
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		route, b64, _ := strings.Cut(strings.TrimSpace(line), " ")
		body, _ := base64.StdEncoding.DecodeString(b64)
		v := target(route)
		answer := map[string]any{"ok": true}
		if v != nil && b64 == "?" {
			answer["v"] = fields(reflect.TypeOf(v))
		} else if v == nil {
			answer = map[string]any{"ok": false, "err": "unknown route " + route}
		} else if err := json.NewDecoder(bytes.NewReader(body)).Decode(v); err != nil {
			answer = map[string]any{"ok": false, "err": err.Error()}
		} else {
			answer["v"] = v
		}
		data, err := json.Marshal(answer)
		if err != nil {
			data, _ = json.Marshal(map[string]any{"ok": false, "err": "marshal: " + err.Error()})
		}
		out.Write(data)
		out.WriteByte('\n')
		out.Flush()
	}
}
