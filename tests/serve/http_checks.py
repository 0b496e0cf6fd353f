#!/usr/bin/env python3
"""epx-serve over HTTP, with Python's http.client as the client:

  http_checks.py PORT GOLDEN.json

GOLDEN.json holds epx-generate's responses ({"name": response}); the server
must give the same token ids. Then: streaming against non-streaming, stop
strings (both ways), unknown fields, and concurrent clients, each of whose
output must equal what the same request gives alone (the server runs with
--deterministic, so batching does not change a bit)."""
import http.client
import json
import sys
import threading

port = int(sys.argv[1])
golden = json.load(open(sys.argv[2]))
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAILED: ") + what)
    if not cond:
        failures.append(what)


def post(body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def complete(body):
    status, data = post(body)
    if status != 200:
        raise RuntimeError(f"status {status}: {data[:300]}")
    return json.loads(data)


def stream(body):
    """The events of a streamed request, and whether it ended with [DONE]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/completions", json.dumps(dict(body, stream=True)))
    r = c.getresponse()
    assert r.status == 200, r.status
    assert r.getheader("Content-Type").startswith("text/event-stream")
    events, done = [], False
    for block in r.read().decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        if payload == "[DONE]":
            done = True
        else:
            assert not done, "an event after [DONE]"
            events.append(json.loads(payload))
    c.close()
    return events, done


def joined(events):
    text = "".join(e["choices"][0]["text"] for e in events)
    ids = [t for e in events for t in e["choices"][0]["token_ids"]]
    return text, ids, events[-1]["choices"][0]["finish_reason"], events[-1].get("usage")


prompts = {
    "greedy": {"prompt": "The option", "max_tokens": 40, "temperature": 0},
    "sampled": {"prompt": "When 'wrap' is set", "max_tokens": 40, "temperature": 0.9, "top_p": 0.95, "seed": 11},
}

# 1. The server against epx-generate.
for name, body in prompts.items():
    got = complete(body)
    want = golden[name]
    check(got["choices"][0]["token_ids"] == want["choices"][0]["token_ids"] and
          got["choices"][0]["text"] == want["choices"][0]["text"],
          f"{name}: the server's output equals epx-generate's ({len(want['choices'][0]['token_ids'])} tokens)")
    check(got["usage"] == want["usage"], f"{name}: usage {got['usage']}")
    check(got["object"] == "text_completion" and got["id"].startswith("cmpl-"), f"{name}: response format")

# 2. Streaming against non-streaming.
for name, body in prompts.items():
    whole = complete(body)["choices"][0]
    events, done = stream(body)
    text, ids, reason, usage = joined(events)
    check(done, f"{name}: the stream ends with data: [DONE]")
    check(text == whole["text"] and ids == whole["token_ids"] and reason == whole["finish_reason"],
          f"{name}: streamed text and ids equal the non-streamed ones ({len(events)} events)")
    check(all(e["choices"][0]["finish_reason"] is None for e in events[:-1]), f"{name}: finish_reason only at the end")
    check(usage is not None and usage["completion_tokens"] == len(ids), f"{name}: the last event's usage")

# 3. Stop strings: cut before the first occurrence, finish_reason stop, in both forms.
base = complete({"prompt": "Set the", "max_tokens": 48, "temperature": 0.7, "seed": 3})["choices"][0]
full = base["text"]
stop = full[20:23] if len(full) >= 23 else full[-3:]
cut = full[:full.find(stop)]
body = {"prompt": "Set the", "max_tokens": 48, "temperature": 0.7, "seed": 3, "stop": ["\u00e9\u00e9never", stop]}
r = complete(body)["choices"][0]
check(r["text"] == cut and r["finish_reason"] == "stop",
      f"stop {stop!r}: text {r['text']!r}, expected {cut!r}, finish_reason {r['finish_reason']}")
check(r["token_ids"] == base["token_ids"][:len(r["token_ids"])], "stop: the token ids are the run's up to the stop")
text, ids, reason, _ = joined(stream(body)[0])
check(text == cut and reason == "stop" and ids == r["token_ids"], f"stop, streamed: text {text!r}")
r = complete(dict(body, stop="zzzz-not-there"))["choices"][0]
check(r["text"] == full and r["finish_reason"] == "length", "a stop string that never appears changes nothing")

# 4. Unknown fields are ignored; a prompt of token ids is the same as its text.
r = complete(dict(prompts["greedy"], frobnicate={"x": 1}, model="anything", user="u"))
check(r["choices"][0]["token_ids"] == golden["greedy"]["choices"][0]["token_ids"], "unknown fields are ignored")
r = complete(dict(prompts["greedy"], prompt=list(b"The option")))
check(r["choices"][0]["token_ids"] == golden["greedy"]["choices"][0]["token_ids"], "a prompt of token ids")

# 5. Concurrent clients: each output equals the same request run alone.
words = ["tab", "wrap", "list", "number", "hidden", "shell", "path", "mouse", "fold", "spell",
         "undo", "font", "case", "scroll", "backup", "syntax", "ruler", "title", "cursor", "indent",
         "magic", "paste", "report", "shift", "timeout", "visual", "wild", "write", "yank", "zoom",
         "bell", "color"]
bodies = [{"prompt": f"'{w}' option: ", "max_tokens": 8 + 2 * i, "temperature": 0 if i % 2 else 0.8, "seed": i}
          for i, w in enumerate(words)]
alone = [complete(b)["choices"][0] for b in bodies]
results = [None] * len(bodies)


def client(i):
    try:
        if i % 3 == 0:
            text, ids, reason, _ = joined(stream(bodies[i])[0])
            results[i] = {"text": text, "token_ids": ids, "finish_reason": reason}
        else:
            results[i] = complete(bodies[i])["choices"][0]
    except Exception as e:  # noqa: BLE001 - reported as a failure below
        results[i] = {"error": repr(e)}


threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
bad = [i for i in range(len(bodies))
       if results[i] is None or results[i].get("token_ids") != alone[i]["token_ids"] or
       results[i].get("text") != alone[i]["text"]]
check(not bad, f"{len(bodies)} concurrent clients get what they get alone (mismatches: {bad})")

# 6. Health and metrics.
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
c.request("GET", "/health")
r = c.getresponse()
check(r.status == 200 and json.loads(r.read()) == {"status": "ok"}, "GET /health")
c.request("GET", "/metrics")
r = c.getresponse()
m = r.read().decode()
check(r.status == 200 and r.getheader("Content-Type").startswith("text/plain"), "GET /metrics is text")
for name in ["epx_requests_total{finish_reason=\"length\"}", "epx_time_to_first_token_seconds_count",
             "epx_time_per_output_token_seconds_bucket", "epx_batch_size", "epx_kv_blocks_used{rank=\"1\"}",
             "epx_expert_tokens_total{moe_layer=\"0\",expert=\"0\"}", "epx_generation_tokens_total"]:
    check(name in m, f"/metrics has {name}")
values = {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l and not l.startswith("#")}
check(all(v == 0 for k, v in values.items() if k.startswith("epx_kv_blocks_used")),
      "every KV block is free again")
experts = sum(v for k, v in values.items() if k.startswith("epx_expert_tokens_total"))
check(experts > 0, f"expert load counted ({experts:.0f} choices)")

print("http checks: " + ("FAILED: " + "; ".join(failures) if failures else "OK"))
sys.exit(1 if failures else 0)
