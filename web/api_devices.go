package web

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"storepay/devices"
	"storepay/gateway"
)

// remoteHost is the address a request came from, as the device's "last
// seen" address. Forwarding headers are not trusted: storepay is reached
// on the store's network, not behind a proxy that would set them.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// deviceProblem maps the devices package's errors to problems.
func deviceProblem(err error) error {
	switch {
	case errors.Is(err, devices.ErrNotFound):
		return problem(http.StatusNotFound, "device_not_found", err.Error())
	case errors.Is(err, devices.ErrNameTaken):
		return problem(http.StatusConflict, "device_name_taken", err.Error())
	case errors.Is(err, devices.ErrRevoked):
		return problem(http.StatusConflict, "device_revoked", err.Error())
	case errors.Is(err, devices.ErrInvalid):
		return problem(http.StatusBadRequest, "invalid_request", err.Error())
	}
	return err
}

type deviceList struct {
	Data    []devices.Status       `json:"data"`
	Summary map[devices.Health]int `json:"summary"`
}

func summarize(all []devices.Status) map[devices.Health]int {
	out := map[devices.Health]int{}
	for _, h := range devices.Healths {
		out[h] = 0
	}
	for _, d := range all {
		out[d.Health]++
	}
	return out
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	all, err := s.devices.Statuses(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if all == nil {
		all = []devices.Status{}
	}
	writeJSON(w, http.StatusOK, deviceList{Data: all, Summary: summarize(all)})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.devices.Get(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.fail(w, r, deviceProblem(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) revokeDevice(w http.ResponseWriter, r *http.Request) {
	reason, err := decodeReason(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.devices.Revoke(r.Context(), chi.URLParam(r, "name"), info(r).Device.Name, reason)
	if err != nil {
		s.fail(w, r, deviceProblem(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

type renameRequest struct {
	Name   *string `json:"name"`
	Reason string  `json:"reason" max:"500"` // a manager's reason, as decodeReason's
}

func (s *Server) renameDevice(w http.ResponseWriter, r *http.Request) {
	var req renameRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Name == nil {
		s.fail(w, r, problem(http.StatusBadRequest, "invalid_request", "name is required"))
		return
	}
	d, err := s.devices.Rename(r.Context(), chi.URLParam(r, "name"), *req.Name, info(r).Device.Name, gateway.MaskPANs(req.Reason))
	if err != nil {
		s.fail(w, r, deviceProblem(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

type heartbeatRequest struct {
	IntervalSeconds *int64               `json:"interval_seconds"`
	Peripherals     []devices.Peripheral `json:"peripherals"`
}

// deviceHeartbeat takes a terminal's heartbeat: the interval until its
// next one and its peripherals' health. A device silent for two
// intervals shows as offline; one reporting an error as degraded.
func (s *Server) deviceHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req heartbeatRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.IntervalSeconds == nil {
		s.fail(w, r, problem(http.StatusBadRequest, "invalid_request", "interval_seconds is required"))
		return
	}
	sec := *req.IntervalSeconds
	if sec < int64(devices.MinHeartbeat/time.Second) || sec > int64(devices.MaxHeartbeat/time.Second) {
		s.fail(w, r, problem(http.StatusBadRequest, "invalid_request", "interval_seconds: out of range (5 to 3600)"))
		return
	}
	for i := range req.Peripherals {
		// Free text from a device: a card number in it is masked.
		req.Peripherals[i].Detail = gateway.MaskPANs(req.Peripherals[i].Detail)
		req.Peripherals[i].ReportedAt = time.Time{}
	}
	d, err := s.devices.Heartbeat(r.Context(), info(r).Device, time.Duration(sec)*time.Second, req.Peripherals)
	if err != nil {
		s.fail(w, r, deviceProblem(err))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// deviceHealth is the readiness probe's detail about devices: counts by
// health and the devices a person should look at.
type deviceHealth struct {
	Summary   map[devices.Health]int `json:"summary"`
	Attention []string               `json:"attention"`
}

func (s *Server) deviceReadiness(ctx context.Context) *deviceHealth {
	all, err := s.devices.Statuses(ctx)
	if err != nil {
		return nil
	}
	d := &deviceHealth{Summary: summarize(all), Attention: []string{}}
	for _, x := range all {
		if x.Health == devices.HealthOffline || x.Health == devices.HealthDegraded {
			d.Attention = append(d.Attention, x.Name+" "+string(x.Health))
		}
	}
	return d
}
