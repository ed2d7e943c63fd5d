"""A stand-in OTLP/HTTP collector for bench/budget.sh and
bench/symbol-order.sh: answers every POST with 200 and an empty protobuf
body, keeps connections alive as a collector does, and speaks TLS when
given a certificate and its key.

    python3 bench/helpers/otlp-sink.py PORT [CERT.pem KEY.pem]
"""
import http.server
import sys


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
if len(sys.argv) > 3:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
