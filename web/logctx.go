package web

import (
	"context"
	"log/slog"
)

// RequestIDHandler wraps h so that every record logged with a request's
// context carries that request's id as "request_id": the "payment
// decided" line of orders, a forwarder's note made while serving a
// manager's replay, any line a handler's callee writes with
// InfoContext. A record that names its request_id itself is left as it
// is. Lines logged without a request's context (background workers) get
// none.
func RequestIDHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(requestIDHandler); ok {
		return h
	}
	return requestIDHandler{h}
}

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if ri, ok := ctx.Value(infoKey{}).(*reqInfo); ok && ri.ID != "" {
		named := false
		r.Attrs(func(a slog.Attr) bool {
			named = a.Key == "request_id"
			return !named
		})
		if !named {
			r = r.Clone()
			r.AddAttrs(slog.String("request_id", ri.ID))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
