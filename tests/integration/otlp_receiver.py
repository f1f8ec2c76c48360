"""A small OTLP/HTTP JSON receiver for the tracing tests: a stdlib HTTP server on a free
127.0.0.1 port, in a thread, that records every POST /v1/traces (headers and JSON body)."""
import http.server
import json
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        rx = self.server.receiver
        with rx.lock:
            rx.posts.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                            self.headers.items()},
                             "body": json.loads(body)})
            status = rx.fail.pop(0) if rx.fail else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class OtlpReceiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []
        self.fail = []          # statuses to answer with before 200s, in order
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.receiver = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        """Every span received so far, flattened, with the resource's service.name added."""
        out = []
        with self.lock:
            for p in self.posts:
                for rs in p["body"]["resourceSpans"]:
                    attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                    for ss in rs["scopeSpans"]:
                        for s in ss["spans"]:
                            s = dict(s)
                            s["service"] = attrs["service.name"]["stringValue"]
                            s["attrs"] = {a["key"]: list(a["value"].values())[0]
                                          for a in s.get("attributes", [])}
                            out.append(s)
        return out

    def wait_spans(self, pred, timeout=5.0):
        """The spans once pred(spans) holds, or what came by the timeout."""
        end = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if pred(spans) or time.monotonic() > end:
                return spans
            time.sleep(0.02)

    def clear(self):
        with self.lock:
            self.posts.clear()
            self.fail.clear()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
