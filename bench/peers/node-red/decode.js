// One firmware line -> one message per reading, named as iiot-gateway names them
// (src/decode: nK -> nodeK with t/h/g/p -> temperature/humidity/gas_resistance/pressure,
// sig -> signal rssi/snr, sts -> stats packets_received/crc_errors). Payloads keep the
// number's text as the firmware wrote it ("20.0"), like the gateway.
// Output 1: MQTT (topic iiot/<node>/<metric>). Output 2: influxdb out (one point per msg).
// Output 3 (env NR_BENCH_JOINED=1 instead of 2): points for join -> influxdb batch.
const MARKER = "JSON sent via VCP: ";
const SENSOR = { t: ["temperature", "celsius"], h: ["humidity", "percent"], g: ["gas_resistance", "ohms"], p: ["pressure", "hpa"] };
const KNOWN = {
    sig: ["signal", { rssi: ["rssi", "dbm"], snr: ["snr", "db"] }],
    sts: ["stats", { rx: ["packets_received"], err: ["crc_errors"] }],
};
const joined = env.get("NR_BENCH_JOINED") === "1";
const line = msg.payload;
const at = line.indexOf(MARKER);
const json = at >= 0 ? line.slice(at + MARKER.length, line.lastIndexOf("}") + 1) : line.trim();
if (!json.startsWith("{")) {
    return null;
}
const mqtt = [];
const points = [];
for (const [, key, body] of json.matchAll(/"(\w+)":\{([^{}]*)\}/g)) {
    const [node, metrics] = KNOWN[key] || (/^n\d+$/.test(key) ? ["node" + key.slice(1), SENSOR] : [key, {}]);
    for (const [, field, value] of body.matchAll(/"(\w+)":(-?[0-9][0-9.eE+-]*)/g)) {
        const [metric, unit] = metrics[field] || [field];
        const tags = unit ? { node, unit } : { node };
        mqtt.push({ topic: `iiot/${node}/${metric}`, payload: value });
        points.push(joined
            ? { payload: { measurement: metric, fields: { value: Number(value) }, tags } }
            : { measurement: metric, payload: [{ value: Number(value) }, tags] });
    }
}
if (mqtt.length === 0) {
    node.warn("no readings in: " + line);
    return null;
}
return joined ? [mqtt, null, points] : [mqtt, points, null];
