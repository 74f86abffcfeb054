package orders

import (
	"encoding/json"
	"time"

	"storepay/gateway"
)

// Money is always an int64 number of minor units (1250 is 12.50) of an
// ISO 4217 currency carried beside it; storepay never uses floats for money.

// OrderStatus is where an order is in its life.
type OrderStatus string

// Order statuses: open → paid → delivered, or open → cancelled. A paid
// order whose payment is voided goes back to open.
const (
	OrderOpen      OrderStatus = "open"
	OrderPaid      OrderStatus = "paid"
	OrderDelivered OrderStatus = "delivered"
	OrderCancelled OrderStatus = "cancelled"
)

// Channel is how the order reached the store.
type Channel string

// Channels.
const (
	WalkIn       Channel = "walk_in"
	Phone        Channel = "phone"
	OnlinePickup Channel = "online_pickup"
)

// Line is one line of an order.
type Line struct {
	SKU         string `json:"sku"`
	Description string `json:"description"`
	Quantity    int64  `json:"quantity"`
	UnitAmount  int64  `json:"unit_amount"`
}

// Order is what a customer buys.
type Order struct {
	ID          string      `json:"id"`
	Status      OrderStatus `json:"status"`
	Channel     Channel     `json:"channel"`
	Currency    string      `json:"currency"`
	Lines       []Line      `json:"lines"`
	TotalAmount int64       `json:"total_amount"`
	// PaidAmount is what the order's live payments cover (authorized,
	// captured, stored or refunded after capture). Tips are not part of it;
	// refunds are returns recorded on their payment and do not reopen an
	// order.
	PaidAmount int64     `json:"paid_amount"`
	TerminalID string    `json:"terminal_id"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Payments is filled by [Service.Order] for reads.
	Payments []Payment `json:"payments,omitempty"`
}

// Status of a payment.
type Status string

// Payment statuses. Pending is storepay's own: a bank call is in flight or
// its outcome is being resolved.
const (
	Pending              Status = "pending"
	Authorized           Status = "authorized"
	Captured             Status = "captured"
	Declined             Status = "declined"
	Stored               Status = "stored"
	Voided               Status = "voided"
	Refunded             Status = "refunded"
	PartiallyRefunded    Status = "partially_refunded"
	DeclinedAfterForward Status = "declined_after_forward"
)

// Method is how a payment is made.
type Method string

// Methods.
const (
	Card Method = "card"
	Cash Method = "cash"
)

// Mode says whether a bank decided the payment at the time of sale.
type Mode string

// Modes.
const (
	ModeOnline  Mode = "online"
	ModeOffline Mode = "offline"
)

// Payment is one tender of an order.
type Payment struct {
	ID             string    `json:"id"`
	OrderID        string    `json:"order_id"`
	Method         Method    `json:"method"`
	Status         Status    `json:"status"`
	Mode           Mode      `json:"mode"`
	Gateway        string    `json:"gateway"`
	Amount         int64     `json:"amount"`
	TipAmount      int64     `json:"tip_amount"`
	CapturedAmount int64     `json:"captured_amount"`
	CapturedAt     time.Time `json:"captured_at,omitzero"`
	RefundedAmount int64     `json:"refunded_amount"`
	Currency       string    `json:"currency"`
	AuthCode       string    `json:"auth_code"`
	DeclineCode    string    `json:"decline_code"`
	CardBrand      string    `json:"card_brand,omitempty"`
	CardLast4      string    `json:"card_last4"`
	TerminalID     string    `json:"terminal_id"`
	Capture        bool      `json:"capture"`
	// PendingOp is the bank operation written ahead and not yet answered
	// (see [Op]); with Status it is the payment's [State].
	PendingOp Op `json:"pending_op,omitempty"`
	// LastError is the last failed bank call told to a manager, and
	// LastErrorCode its stable code (see gateway.Explain); the raw error
	// is only in the log.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorCode string    `json:"last_error_code,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`

	AuthorizedAmount int64  `json:"-"`
	BankAuthID       string `json:"-"`
	Fingerprint      string `json:"-"`
	sealed           []byte
	cardBin          string
	opKey            string
	opHash           string
	pendingAmount    int64
	pendingTip       int64
	pendingKey       string
	pendingOpKey     string
	keyOp            Op // the operation pendingOpKey started, kept after it finished
	pendingSince     time.Time
	resolveAttempts  int
	resolveAfter     time.Time
	// The lease: which process (its incarnation id) works on the pending
	// operation now, and until when. A live request holds it while it
	// calls the bank; the resolver takes only what nobody holds, so that
	// one operation is never run twice at once. Durable, so that
	// correctness never rests on memory.
	leaseOwner string
	leaseUntil time.Time
}

// State is the payment's state in the payment machine.
func (p *Payment) State() State { return State{p.Status, p.PendingOp} }

// Refund is one refund of a captured payment.
type Refund struct {
	ID           string    `json:"id"`
	PaymentID    string    `json:"payment_id"`
	Amount       int64     `json:"amount"`
	Status       string    `json:"status"`
	BankRefundID string    `json:"bank_refund_id,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// Change is one recorded transition of a payment: the machine's event
// and the states it moved between.
type Change struct {
	From   Status    `json:"from"`
	To     Status    `json:"to"`
	FromOp Op        `json:"from_op,omitempty"`
	ToOp   Op        `json:"to_op,omitempty"`
	Event  Event     `json:"event,omitempty"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// noteError keeps err as the payment's last error, told as a manager
// reads it (gateway.Explain); nil clears it. The raw error is logged by
// the router when the call fails, and never stored where an answer or
// the console would show it.
func (p *Payment) noteError(err error) {
	x := gateway.Explain(err)
	p.LastError, p.LastErrorCode = x.Text, x.Code
}
