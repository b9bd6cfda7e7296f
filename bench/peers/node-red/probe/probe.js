// Read-only probe for bench/peers/node-red.sh (loaded through settings.nodesDir). It tells the
// bench when Node-RED can no longer deliver anything, so its losses are counted exactly:
//   GET /bench/pending (admin API) -> {"influx_buffered": lines in the write buffers of the
//   influx nodes' write APIs, "influx_retry": lines waiting in their retry buffers (retried
//   5 s to 125 s later, dropped after 180 s), "mqtt_unacked": QoS 1 messages MQTT.js holds
//   until PUBACK, "mqtt_queued": messages queued while disconnected}.
// It changes nothing in the flow: the only hook is a wrapper around
// InfluxDB.prototype.getWriteApi (called once per influx node at deploy) that remembers the
// write APIs it returns.
module.exports = function (RED) {
    const path = require("path");
    // The client the contrib nodes load (same file, so the same class).
    const contrib = path.dirname(require.resolve("node-red-contrib-influxdb", { paths: [process.env.NR_PREFIX] }));
    const { InfluxDB } = require(require.resolve("@influxdata/influxdb-client", { paths: [contrib] }));
    const apis = [];
    const getWriteApi = InfluxDB.prototype.getWriteApi;
    InfluxDB.prototype.getWriteApi = function (...args) {
        const api = getWriteApi.apply(this, args);
        apis.push(api);
        return api;
    };
    RED.plugins.registerPlugin("iiot-bench-probe", {
        onadd() {
            RED.httpAdmin.get("/bench/pending", (req, res) => {
                const out = { influx_buffered: 0, influx_retry: 0, mqtt_unacked: 0, mqtt_queued: 0 };
                for (const api of apis) {
                    if (api.closed) continue;
                    out.influx_buffered += api.writeBuffer.length;
                    out.influx_retry += api.retryBuffer.size;
                }
                RED.nodes.eachNode((n) => {
                    const client = n.type === "mqtt-broker" && RED.nodes.getNode(n.id)?.client;
                    if (client) {
                        out.mqtt_unacked += Object.keys(client.outgoing || {}).length;
                        out.mqtt_queued += (client.queue || []).length;
                    }
                });
                res.json(out);
            });
        },
    });
};
