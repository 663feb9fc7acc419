package main

import (
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats-server/v2/server"
)

// natsPermissions are the least privileges each herald component needs on
// NATS, for one deployment and its stream: what `herald cluster init`
// writes into the NATS servers' configuration, and what the tests check
// the components work with, and nothing more.
//
// A gateway may read the log (direct and leader gets, stream info), probe
// other gateways' liveness, and listen on its own subjects and the
// broadcast; it answers requests (doorbells with wait=delivered, liveness,
// stats) through allow_responses, and may not append to the log, ring
// another gateway, or broadcast. A dispatcher owns the stream (create,
// update, info), appends, reads heads, rings and probes every gateway, and
// broadcasts; it may not listen on a gateway's subjects.
func natsPermissions(d wire.Deployment, stream string, gateway string) *server.Permissions {
	api := "$JS.API."
	read := []string{api + "STREAM.INFO." + stream, api + "STREAM.MSG.GET." + stream,
		api + "DIRECT.GET." + stream, api + "DIRECT.GET." + stream + ".>"}
	if gateway != "" {
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: append(read, d.Live("*"))},
			Subscribe: &server.SubjectPermission{Allow: []string{
				d.Gateway(gateway), d.Live(gateway), d.Stats(gateway), d.Broadcast(), "_INBOX.>"}},
			Response: &server.ResponsePermission{MaxMsgs: 1},
		}
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append(read,
			api+"STREAM.CREATE."+stream, api+"STREAM.UPDATE."+stream,
			d.InboxPrefix()+">", d.Gateway("*"), d.Live("*"), d.Stats("*"), d.Broadcast())},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}
