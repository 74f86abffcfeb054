package main

import (
	"strings"
	"testing"
)

func withHQ(hq string) string {
	return strings.Replace(goodConfig, `"offline":`, `"hq": `+hq+`, "offline":`, 1)
}

func TestParseConfigHQBlock(t *testing.T) {
	c, err := ParseConfig([]byte(withHQ(`{"urls": ["nats-leaf://127.0.0.1:7422"], "credentials_env": "STOREPAY_HQ_CREDS", "data_dir": "/var/lib/storepay/nats"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if c.HQ == nil || c.HQ.URLs[0] != "nats-leaf://127.0.0.1:7422" || c.HQ.CredentialsEnv != "STOREPAY_HQ_CREDS" || c.HQ.DataDir != "/var/lib/storepay/nats" {
		t.Fatalf("hq block: %+v", c.HQ)
	}
	if c, err := ParseConfig([]byte(goodConfig)); err != nil || c.HQ != nil {
		t.Fatalf("no hq block: %+v %v", c.HQ, err)
	}
	for _, tc := range []struct{ hq, key string }{
		{`{"urls": [], "credentials_env": "E", "data_dir": "d"}`, "hq.urls"},
		{`{"urls": ["http://x:1"], "credentials_env": "E", "data_dir": "d"}`, "hq.urls[0]"},
		{`{"urls": ["nats-leaf://u:p@x:1"], "credentials_env": "E", "data_dir": "d"}`, "hq.urls[0]"},
		{`{"urls": ["nats-leaf://x:1"], "credentials_env": "", "data_dir": "d"}`, "hq.credentials_env"},
		{`{"urls": ["nats-leaf://x:1"], "credentials_env": "E", "data_dir": ""}`, "hq.data_dir"},
		{`{"urls": ["nats-leaf://x:1"], "credentials_env": "E", "data_dir": "d", "extra": 1}`, "hq.extra"},
		{`{"urls": ["nats-leaf://x:1"], "credentials_env": "E", "data_dir": "d", "retention": "1m"}`, "hq.retention"},
		{`{"urls": ["nats-leaf://x:1"], "credentials_env": "E", "data_dir": "d", "max_bytes": 10}`, "hq.max_bytes"},
		{`"nats-leaf://x:1"`, "hq"},
	} {
		_, err := ParseConfig([]byte(withHQ(tc.hq)))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("hq %s: error %v does not name %s", tc.hq, err, tc.key)
		}
	}
	bad := strings.Replace(withHQ(`{"urls": ["nats-leaf://x:1"], "credentials_env": "E", "data_dir": "d"}`), `"store-042"`, `"store 42"`, 1)
	if _, err := ParseConfig([]byte(bad)); err == nil || !strings.Contains(err.Error(), "store_id") {
		t.Errorf("a store id unfit for a JetStream domain: %v", err)
	}
}

const goodHQConfig = `{"listen": "127.0.0.1:8090", "database": "hq.db", "leafnodes_listen": "127.0.0.1:7422",
 "data_dir": "nats", "stores": [{"id": "store-1", "password_env": "PW1"}]}`

func TestParseHQConfig(t *testing.T) {
	c, err := ParseHQConfig([]byte(goodHQConfig))
	if err != nil || len(c.Stores) != 1 || c.Stores[0].PasswordEnv != "PW1" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, tc := range []struct{ from, to, key string }{
		{`"listen": "127.0.0.1:8090", `, ``, "listen"},
		{`"hq.db"`, `""`, "database"},
		{`"127.0.0.1:7422"`, `"nowhere"`, "leafnodes_listen"},
		{`"data_dir": "nats"`, `"data_dir": ""`, "data_dir"},
		{`"store-1"`, `"a.b"`, "stores[0].id"},
		{`"store-1"`, `"hq"`, "stores[0].id"},
		{`"PW1"`, `""`, "stores[0].password_env"},
		{`"PW1"}`, `"PW1", "x": 1}`, "stores[0].x"},
		{`"listen"`, `"Listen"`, "listen"},
	} {
		_, err := ParseHQConfig([]byte(strings.Replace(goodHQConfig, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s -> %s: error %v does not name %s", tc.from, tc.to, err, tc.key)
		}
	}
}

func TestParseHQConfigCluster(t *testing.T) {
	const cluster = `"cluster": {"name": "storepayhq", "node": "hq1", "listen": "0.0.0.0:6222",
	 "routes": ["nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"], "nodes": ["hq1", "hq2", "hq3"]}`
	good := strings.Replace(goodHQConfig, `"data_dir": "nats",`, `"data_dir": "nats", `+cluster+`,`, 1)
	c, err := ParseHQConfig([]byte(good))
	if err != nil || c.Cluster == nil || c.Cluster.Node != "hq1" || len(c.Cluster.Routes) != 2 {
		t.Fatalf("%+v %v", c.Cluster, err)
	}
	for _, tc := range []struct{ from, to, key string }{
		{`"node": "hq1"`, `"node": "hq-1"`, "cluster.node"},
		{`"node": "hq1"`, `"node": "hq4"`, "cluster.nodes"},
		{`"name": "storepayhq"`, `"name": ""`, "cluster.name"},
		{`"0.0.0.0:6222"`, `"6222"`, "cluster.listen"},
		{`"nats-route://10.0.0.3:6222"`, `"http://10.0.0.3:6222"`, "cluster.routes[1]"},
		{`, "nats-route://10.0.0.3:6222"`, ``, "cluster.routes"},
		{`"nodes": ["hq1", "hq2", "hq3"]`, `"nodes": ["hq1", "hq2", "hq2"]`, "cluster.nodes[2]"},
		{`"nodes": ["hq1", "hq2", "hq3"]`, `"nodes": ["hq1", "hq2"]`, "cluster.nodes"},
		{`"nodes"`, `"peers"`, "cluster.peers"},
	} {
		_, err := ParseHQConfig([]byte(strings.Replace(good, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s -> %s: error %v does not name %s", tc.from, tc.to, err, tc.key)
		}
	}
}
