package web

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
)

// consoleDevices lists the store's devices with their health, last seen
// and peripherals, and forms to rename or revoke one.
func (s *Server) consoleDevices(w http.ResponseWriter, r *http.Request) {
	all, err := s.devices.Statuses(r.Context())
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	summary := map[string]int{} // string keys: the template indexes with literals
	for h, n := range summarize(all) {
		summary[string(h)] = n
	}
	s.render(w, r, http.StatusOK, "devices", view{Title: "Devices", Nav: "devices", Data: map[string]any{
		"Devices": all, "Summary": summary, "Done": r.URL.Query().Get("done")}})
}

// consoleDeviceAction revokes or renames a device as the JSON API does,
// audited with the signed-in manager's name and the form's reason.
func (s *Server) consoleDeviceAction(w http.ResponseWriter, r *http.Request) {
	name, action := chi.URLParam(r, "name"), chi.URLParam(r, "action")
	if action != "revoke" && action != "rename" {
		s.consoleNotFound(w, r)
		return
	}
	reason, ok := s.formReason(w, r, "/console/devices")
	if !ok {
		return
	}
	actor := info(r).Device.Name
	var err error
	if action == "revoke" {
		_, err = s.devices.Revoke(r.Context(), name, actor, reason)
	} else {
		_, err = s.devices.Rename(r.Context(), name, strings.TrimSpace(r.PostForm.Get("new_name")), actor, reason)
	}
	if err != nil {
		s.consoleFail(w, r, deviceProblem(err), "/console/devices", "Back to the devices")
		return
	}
	http.Redirect(w, r, "/console/devices?done="+action, http.StatusSeeOther)
}
