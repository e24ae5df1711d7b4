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
	"os"

	"goref/api"
)

type projection map[string]any

func images(list []api.ImageData) any {
	if list == nil {
		return nil
	}
	return len(list)
}

func common(p projection, stream *bool, keep *api.Duration, think *api.ThinkValue) {
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
		var r api.GenerateRequest
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		p["model"], p["prompt"], p["raw"], p["options"], p["top_logprobs"] = r.Model, r.Prompt, r.Raw, r.Options, r.TopLogprobs
		p["images"] = images(r.Images)
		common(p, r.Stream, r.KeepAlive, r.Think)
	case "chat":
		var r api.ChatRequest
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
		var r api.EmbedRequest
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
