// Reads keep_alive values (one JSON value a line) and answers, a line each, the duration Ollama holds
// for them as nanoseconds, or "err": a number is seconds (converted as time.Duration(t * 1e9)), a string
// is read by the standard library's time.ParseDuration, a negative duration is forever (api.Duration).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		var v any
		if err := json.Unmarshal(in.Bytes(), &v); err != nil {
			fmt.Fprintln(out, "err")
			out.Flush()
			continue
		}
		var d time.Duration
		ok := true
		switch t := v.(type) {
		case float64:
			if t < 0 {
				d = time.Duration(math.MaxInt64)
			} else {
				d = time.Duration(t * float64(time.Second))
			}
		case string:
			parsed, err := time.ParseDuration(t)
			if err != nil {
				ok = false
			} else if parsed < 0 {
				d = time.Duration(math.MaxInt64)
			} else {
				d = parsed
			}
		default:
			ok = false
		}
		if ok {
			fmt.Fprintln(out, int64(d))
		} else {
			fmt.Fprintln(out, "err")
		}
		out.Flush()
	}
}
