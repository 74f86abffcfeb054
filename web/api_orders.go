package web

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"storepay/gateway"
	"storepay/orders"
)

type lineRequest struct {
	SKU         string `json:"sku" max:"100"`
	Description string `json:"description" max:"500"`
	Quantity    *int64 `json:"quantity"`
	UnitAmount  *int64 `json:"unit_amount"`
}

type orderRequest struct {
	Channel  string        `json:"channel"`
	Currency string        `json:"currency"`
	Lines    []lineRequest `json:"lines"`
	// TerminalID is read and ignored: the terminal is the token's device,
	// never what a body claims (the contract), and a body that says it
	// anyway is not refused as unknown.
	TerminalID any `json:"terminal_id"`
}

func (s *Server) createOrder(r *http.Request, idem orders.Request) (any, error) {
	var req orderRequest
	if err := decode(nil, r, &req); err != nil {
		return nil, err
	}
	lines := make([]orders.Line, len(req.Lines))
	for i, l := range req.Lines {
		if l.Quantity == nil {
			return nil, problem(http.StatusBadRequest, "invalid_request", fmt.Sprintf("lines[%d].quantity is required", i))
		}
		if l.UnitAmount == nil {
			return nil, problem(http.StatusBadRequest, "invalid_request", fmt.Sprintf("lines[%d].unit_amount is required", i))
		}
		// A card number typed into a description is masked: the order is
		// stored and answered, and neither may hold one (the contract).
		// The sku is a product code, kept as sent: an EAN-13 (13 digits)
		// can pass for a card number.
		lines[i] = orders.Line{SKU: l.SKU, Description: gateway.MaskPANs(l.Description), Quantity: *l.Quantity, UnitAmount: *l.UnitAmount}
	}
	return s.orders.CreateOrder(r.Context(), orders.NewOrder{Channel: orders.Channel(req.Channel), Currency: req.Currency,
		Lines: lines, TerminalID: info(r).Device.Name, Request: idem})
}

// The shapes of the keyed routes' answers.
var (
	createdOrder   = answerShape{http.StatusCreated, func(v any) string { return "/v1/orders/" + v.(orders.Order).ID }}
	createdPayment = answerShape{http.StatusCreated, func(v any) string { return "/v1/payments/" + v.(orders.Payment).ID }}
	ok200          = answerShape{status: http.StatusOK}
	created201     = answerShape{status: http.StatusCreated}
)

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := s.orders.Order(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// decodeEmpty accepts an empty body or an empty JSON object.
func decodeEmpty(r *http.Request) error {
	if r.ContentLength == 0 {
		return nil
	}
	var v struct{}
	return decode(nil, r, &v)
}

func (s *Server) deliverOrder(r *http.Request, _ orders.Request) (any, error) {
	if err := decodeEmpty(r); err != nil {
		return nil, err
	}
	return s.orders.Deliver(r.Context(), chi.URLParam(r, "id"))
}

func (s *Server) cancelOrder(r *http.Request, _ orders.Request) (any, error) {
	if err := decodeEmpty(r); err != nil {
		return nil, err
	}
	if o, err := s.orders.Order(r.Context(), chi.URLParam(r, "id")); err == nil {
		taken := []string{o.TerminalID}
		for _, p := range o.Payments {
			taken = append(taken, p.TerminalID)
		}
		if err := s.mayUndo(r, "order "+o.ID, taken...); err != nil {
			return nil, err
		}
	}
	return s.orders.Cancel(r.Context(), chi.URLParam(r, "id"))
}

type cardRequest struct {
	PAN      string `json:"pan"`
	ExpMonth int    `json:"exp_month"`
	ExpYear  int    `json:"exp_year"`
}

type paymentRequest struct {
	Method          string       `json:"method"`
	Amount          *int64       `json:"amount"`
	TipAmount       int64        `json:"tip_amount"`
	Capture         *bool        `json:"capture"`
	Currency        string       `json:"currency"`
	Card            *cardRequest `json:"card"`
	OfflineBehavior string       `json:"offline_behavior"`
	TerminalID      any          `json:"terminal_id"` // ignored: see orderRequest
}

func (s *Server) createPayment(r *http.Request, idem orders.Request) (any, error) {
	var req paymentRequest
	if err := decode(nil, r, &req); err != nil {
		return nil, err
	}
	if req.Amount == nil {
		return nil, problem(http.StatusBadRequest, "invalid_request", "amount is required")
	}
	pr := orders.PayRequest{OrderID: chi.URLParam(r, "id"), TerminalID: info(r).Device.Name, Request: idem,
		Method: orders.Method(req.Method), Amount: *req.Amount, TipAmount: req.TipAmount, Capture: req.Capture,
		Currency: req.Currency, OfflineBehavior: orders.OfflineBehavior(req.OfflineBehavior)}
	if req.Card != nil {
		pr.Card = &gateway.Card{PAN: req.Card.PAN, ExpMonth: req.Card.ExpMonth, ExpYear: req.Card.ExpYear}
	}
	return s.orders.Pay(r.Context(), pr)
}

func (s *Server) getPayment(w http.ResponseWriter, r *http.Request) {
	p, err := s.orders.Payment(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

var paymentStatuses = map[string]bool{}

func init() {
	for _, st := range []orders.Status{orders.Pending, orders.Authorized, orders.Captured, orders.Declined, orders.Stored,
		orders.Voided, orders.Refunded, orders.PartiallyRefunded, orders.DeclinedAfterForward} {
		paymentStatuses[string(st)] = true
	}
}

func (s *Server) listPayments(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := orders.PaymentFilter{TerminalID: q.Get("terminal_id"), Status: orders.Status(q.Get("status")),
		OrderID: q.Get("order_id"), Last4: q.Get("last4")}
	if st := q.Get("status"); st != "" && !paymentStatuses[st] {
		s.fail(w, r, problem(http.StatusBadRequest, "invalid_request", "status "+strconv.Quote(st)+" is not a payment status"))
		return
	}
	limit, offset, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f.Limit, f.Offset = limit+1, offset
	ps, err := s.orders.Payments(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": ps[:min(len(ps), limit)], "has_more": len(ps) > limit})
}

type captureRequest struct {
	Amount    *int64 `json:"amount"`
	TipAmount int64  `json:"tip_amount"`
}

func (s *Server) capturePayment(r *http.Request, idem orders.Request) (any, error) {
	var req captureRequest
	if r.ContentLength != 0 {
		if err := decode(nil, r, &req); err != nil {
			return nil, err
		}
	}
	return s.orders.Capture(r.Context(), orders.CaptureRequest{PaymentID: chi.URLParam(r, "id"), Request: idem,
		Amount: req.Amount, TipAmount: req.TipAmount})
}

func (s *Server) voidPayment(r *http.Request, idem orders.Request) (any, error) {
	if err := decodeEmpty(r); err != nil {
		return nil, err
	}
	if err := s.payerMayUndo(r); err != nil {
		return nil, err
	}
	return s.orders.Void(r.Context(), orders.VoidRequest{PaymentID: chi.URLParam(r, "id"), Request: idem})
}

type refundRequest struct {
	Amount *int64 `json:"amount"`
}

func (s *Server) refundPayment(r *http.Request, idem orders.Request) (any, error) {
	var req refundRequest
	if err := decode(nil, r, &req); err != nil {
		return nil, err
	}
	if req.Amount == nil {
		return nil, problem(http.StatusBadRequest, "invalid_request", "amount is required")
	}
	if err := s.payerMayUndo(r); err != nil {
		return nil, err
	}
	return s.orders.Refund(r.Context(), orders.RefundRequest{PaymentID: chi.URLParam(r, "id"), Request: idem, Amount: *req.Amount})
}

// payerMayUndo applies the undo policy to the payment the path names. A
// payment that cannot be read is left to the operation, which answers
// its 404.
func (s *Server) payerMayUndo(r *http.Request) error {
	p, err := s.orders.Payment(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		return nil
	}
	return s.mayUndo(r, "payment "+p.ID, p.TerminalID)
}
