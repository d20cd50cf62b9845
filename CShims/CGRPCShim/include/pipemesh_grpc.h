/*
 * pipemesh_grpc.h — a thin C interface over grpc++'s generic services and stubs.
 *
 * The shim knows nothing of Pipemesh's messages: requests and responses cross
 * it as bytes. Every function is thread-safe unless stated otherwise.
 *
 * Ownership rules, stated once:
 *  - `pm_received_bytes` handed to a callback belong to the receiver, who must
 *    call `pm_received_bytes_release(owner)` exactly once when done reading.
 *  - `pm_outgoing_bytes` given to the shim are owned by the shim from the call
 *    on: it calls `release(release_context)` once gRPC no longer needs them (if
 *    `release` is NULL the shim copies the bytes before returning).
 *  - Handles (`pm_server`, `pm_channel`, `pm_server_call`, `pm_client_call`)
 *    come from a create/start function and are freed by their
 *    destroy/release function, exactly once.
 *
 * Threading: callbacks run on gRPC's threads. They must return quickly and
 * never block; hand work elsewhere and answer later from any thread.
 */
#ifndef PIPEMESH_GRPC_H
#define PIPEMESH_GRPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gRPC status codes, as on the wire. */
enum {
  PM_STATUS_OK = 0,
  PM_STATUS_CANCELLED = 1,
  PM_STATUS_UNKNOWN = 2,
  PM_STATUS_INVALID_ARGUMENT = 3,
  PM_STATUS_DEADLINE_EXCEEDED = 4,
  PM_STATUS_NOT_FOUND = 5,
  PM_STATUS_ALREADY_EXISTS = 6,
  PM_STATUS_PERMISSION_DENIED = 7,
  PM_STATUS_RESOURCE_EXHAUSTED = 8,
  PM_STATUS_FAILED_PRECONDITION = 9,
  PM_STATUS_ABORTED = 10,
  PM_STATUS_OUT_OF_RANGE = 11,
  PM_STATUS_UNIMPLEMENTED = 12,
  PM_STATUS_INTERNAL = 13,
  PM_STATUS_UNAVAILABLE = 14,
  PM_STATUS_DATA_LOSS = 15,
  PM_STATUS_UNAUTHENTICATED = 16
};

/* Error out-parameter of functions that can fail: code is a status code. */
typedef struct pm_error {
  int code;
  char message[512];
} pm_error;

/* Bytes received from gRPC. Read `data[0..<length]`, then release `owner`. */
typedef struct pm_received_bytes {
  const uint8_t *data;
  size_t length;
  void *owner;
} pm_received_bytes;

/* Frees received bytes. NULL is ignored. */
void pm_received_bytes_release(void *owner);

/* Bytes handed to gRPC, see the ownership rules above. */
typedef struct pm_outgoing_bytes {
  const uint8_t *data;
  size_t length;
  void (*release)(void *release_context);
  void *release_context;
} pm_outgoing_bytes;

/* One metadata entry (header). Keys are lower-case ASCII; values are bytes. */
typedef struct pm_metadata_entry {
  const char *key;
  size_t key_length;
  const char *value;
  size_t value_length;
} pm_metadata_entry;

/* PEM-encoded TLS material; NULL fields are absent. */
typedef struct pm_tls_config {
  /* Server: its certificate chain and key. Client: its own, for mTLS. */
  const char *certificate_chain_pem;
  const char *private_key_pem;
  /* Server: CA that client certificates must chain to (enables mTLS).
   * Client: CA that the server certificate must chain to. */
  const char *root_certificates_pem;
  /* Server: refuse clients without a valid certificate (mTLS). */
  int require_client_certificate;
  /* Client: the name to verify in the server certificate, instead of the
   * host in the target address. */
  const char *server_name_override;
} pm_tls_config;

/* Transport settings shared by servers and channels. Zero means default. */
typedef struct pm_transport_config {
  /* NULL for plaintext. */
  const pm_tls_config *tls;
  /* Largest message sent or received; default 256 MiB. */
  int64_t max_message_bytes;
  /* Interval between keepalive pings; default: gRPC's (2 h on clients, off
   * when idle). */
  int64_t keepalive_time_ms;
  /* How long to wait for a keepalive ack; default 20 s. */
  int64_t keepalive_timeout_ms;
  /* Longest wait between attempts to reconnect a channel whose server went
   * away; default: gRPC's (120 s). Ignored by servers. */
  int64_t max_reconnect_backoff_ms;
} pm_transport_config;

/* ------------------------------------------------------------------ server */

typedef struct pm_server pm_server;
typedef struct pm_server_call pm_server_call;

typedef enum pm_method_kind {
  PM_METHOD_UNARY = 0,
  PM_METHOD_SERVER_STREAMING = 1,
  /* The client sends a stream of messages, the server answers one. */
  PM_METHOD_CLIENT_STREAMING = 2,
  /* Both send streams: the server reads and writes at the same time. */
  PM_METHOD_BIDI_STREAMING = 3
} pm_method_kind;

/* Called once per incoming call to a registered method, on a gRPC thread,
 * with the request message (a client stream's first; the handler reads the
 * rest with `pm_server_call_read`). A bidirectional call whose client sends
 * nothing ends with OK without calling the handler. The receiver owns `call` (answer with
 * `pm_server_call_finish`, then `pm_server_call_release`) and `request`. */
typedef void (*pm_server_handler)(void *handler_context, pm_server_call *call,
                                  pm_received_bytes request);

/* Called exactly once per call that set one: with `cancelled` 1 when the call
 * is cancelled (by the client, a deadline or the server's shutdown) before it
 * finished, or with 0 when the handler releases the call, so that `context`
 * can be freed there. */
typedef void (*pm_server_cancel_handler)(void *context, int cancelled);

/* Called when a streamed write completed (`ok` 0: the call is gone). */
typedef void (*pm_write_done)(void *context, int ok);

/* Called when a read of a client stream completed: with `has_message` 1 and
 * the message (the receiver owns it), or 0 at the stream's end, which is also
 * what a finished or cancelled call reads. */
typedef void (*pm_read_done)(void *context, int has_message,
                             pm_received_bytes message);

/* Creates a server that will listen on `address` ("127.0.0.1:0" picks a
 * port). It answers only the methods registered on it: health and reflection
 * are services like any other. Returns NULL and fills `error` on failure.
 * Destroy with `pm_server_destroy`. */
pm_server *pm_server_create(const char *address,
                            const pm_transport_config *transport,
                            pm_error *error);

/* Registers a handler for a full method name ("/pkg.Service/Method"). Only
 * before `pm_server_start`. `handler_context` must outlive the server. */
void pm_server_register(pm_server *server, const char *method,
                        pm_method_kind kind, pm_server_handler handler,
                        void *handler_context);

/* Binds and starts serving. Returns the bound port, or -1 with `error`. */
int pm_server_start(pm_server *server, pm_error *error);

/* Stops accepting calls, lets running calls finish until `deadline_ms` from
 * now, then cancels the rest. Blocks: never call it on a gRPC thread. */
void pm_server_shutdown(pm_server *server, int64_t deadline_ms);

/* Frees the server; shuts it down first with no grace period if needed. */
void pm_server_destroy(pm_server *server);

/* The number of request metadata entries, and one of them. The returned
 * pointers live as long as the call handle. */
size_t pm_server_call_metadata_count(const pm_server_call *call);
pm_metadata_entry pm_server_call_metadata(const pm_server_call *call,
                                          size_t index);

/* Milliseconds until the client's deadline; INT64_MAX when there is none. */
int64_t pm_server_call_remaining_ms(const pm_server_call *call);

/* The client's address, "ipv4:127.0.0.1:5123"; NUL-terminated, lives as long
 * as the call handle. */
const char *pm_server_call_peer(const pm_server_call *call);

/* The common name of the client's certificate when TLS verified it (mutual
 * TLS), else ""; NUL-terminated, lives as long as the call handle. */
const char *pm_server_call_peer_identity(const pm_server_call *call);

/* Sets the cancellation callback, once per call; if the call was cancelled
 * already, it runs at once on the calling thread. */
void pm_server_call_on_cancel(pm_server_call *call,
                              pm_server_cancel_handler handler, void *context);

/* Streams one response (server- and bidirectional-streaming methods). One write in flight at a
 * time: wait for `done` before the next. */
void pm_server_call_write(pm_server_call *call, pm_outgoing_bytes message,
                          pm_write_done done, void *done_context);

/* Streams the last response and ends the call with OK, both in one operation (server- and
 * bidirectional-streaming methods): the client gets the message and the status together.
 * Returns 1 when it went out; 0 when the call is over, a write is still in flight or the server
 * is stopping, and the message is not sent. A finish after it is ignored. */
int pm_server_call_write_last(pm_server_call *call, pm_outgoing_bytes message);

/* Reads the next message of a client stream (client- and
 * bidirectional-streaming methods). One read in flight at a time: wait for
 * `done` before the next; a read and a write may be in flight together. */
void pm_server_call_read(pm_server_call *call, pm_read_done done,
                         void *done_context);

/* Ends the call: with `response` (unary or client-streaming, status OK; pass
 * length 0 and NULL data when the server streams) or with an error status and message. Once per call; a
 * call already cancelled ignores the response. */
void pm_server_call_finish(pm_server_call *call, int status_code,
                           const char *status_message,
                           pm_outgoing_bytes response);

/* Cancels the call from the server side: it ends with CANCELLED and the
 * cancellation handler runs. */
void pm_server_call_cancel(pm_server_call *call);

/* Gives up the handler's reference; a call released before it finished is
 * finished with CANCELLED. */
void pm_server_call_release(pm_server_call *call);

/* ------------------------------------------------------------------ client */

typedef struct pm_channel pm_channel;
typedef struct pm_client_call pm_client_call;

/* Opens a long-lived channel to `target` ("127.0.0.1:7000", "dns:host:port").
 * Connects lazily. Returns NULL with `error` on bad credentials. */
pm_channel *pm_channel_create(const char *target,
                              const pm_transport_config *transport,
                              pm_error *error);

/* Waits up to `timeout_ms` for the channel to connect; returns 1 when
 * connected. Blocks. */
int pm_channel_wait_connected(pm_channel *channel, int64_t timeout_ms);

/* Ends the wait between reconnection attempts: a channel that failed to
 * connect tries again at once instead of failing calls fast until its
 * backoff ends (for a peer known to be back). */
void pm_channel_reset_connect_backoff(pm_channel *channel);

void pm_channel_destroy(pm_channel *channel);

/* Options of one call. `timeout_ms` <= 0 means no deadline. */
typedef struct pm_call_options {
  int64_t timeout_ms;
  const pm_metadata_entry *metadata;
  size_t metadata_count;
  /* Non-zero: while the channel connects (or backs off after losing its
   * server), wait for it, up to the deadline, instead of failing at once
   * with UNAVAILABLE (gRPC's wait-for-ready). */
  int wait_for_ready;
} pm_call_options;

/* A unary call's completion: a response (status OK) or an error status. */
typedef void (*pm_unary_done)(void *context, int status_code,
                              const char *status_message,
                              pm_received_bytes response);

/* A message of a server stream. */
typedef void (*pm_stream_message)(void *context, pm_received_bytes message);

/* The end of a server stream, after its last message. */
typedef void (*pm_stream_done)(void *context, int status_code,
                               const char *status_message);

/* Starts a unary call. `done` runs exactly once, on a shim thread. The handle
 * serves to cancel; release it once (before or after completion). */
pm_client_call *pm_client_unary(pm_channel *channel, const char *method,
                                pm_outgoing_bytes request,
                                const pm_call_options *options,
                                pm_unary_done done, void *context);

/* Starts a server-streaming call. No message is read until the receiver asks
 * with `pm_client_call_request_next` (flow control); each request yields one
 * `on_message`, or `on_done` at the end. `on_done` runs exactly once. */
pm_client_call *pm_client_server_stream(pm_channel *channel,
                                        const char *method,
                                        pm_outgoing_bytes request,
                                        const pm_call_options *options,
                                        pm_stream_message on_message,
                                        pm_stream_done on_done, void *context);

/* Starts a client-streaming call: send its messages with
 * `pm_client_call_write`, end them with `pm_client_call_writes_done`; `done`
 * runs exactly once with the server's answer or an error status (possibly
 * before the client has sent everything: then writes fail). */
pm_client_call *pm_client_client_stream(pm_channel *channel,
                                        const char *method,
                                        const pm_call_options *options,
                                        pm_unary_done done, void *context);

/* Sends one message of a client stream; one write in flight at a time: wait
 * for `done` (`ok` 0: the call is over, the answer says why). */
void pm_client_call_write(pm_client_call *call, pm_outgoing_bytes message,
                          pm_write_done done, void *done_context);

/* Ends a client stream's messages (after the last write completed). */
void pm_client_call_writes_done(pm_client_call *call);

/* Asks for the next message of a server stream. */
void pm_client_call_request_next(pm_client_call *call);

/* Cancels the call; its completion reports CANCELLED unless it finished. */
void pm_client_call_cancel(pm_client_call *call);

void pm_client_call_release(pm_client_call *call);

/* ------------------------------------------------------------- client loop */

/* Client calls complete on the shim's client loop: one thread that polls
 * their completion queue and, between completions, runs work posted to it.
 * Code that awaits calls can run there and be resumed by the very thread that
 * took the answer off the socket. Work posted to the loop must be short and
 * never block: it holds up every call's completion. */

/* Runs one piece of posted work on the loop's thread. */
typedef void (*pm_loop_runner)(void *runner_context, void *work);

/* 1 when the calling thread is the client loop's, else 0. */
int pm_client_loop_is_current(void);

/* Has the loop call `runner(runner_context, work)` once, after what it is
 * doing now, in posting order. Never blocks; any thread. */
void pm_client_loop_post(pm_loop_runner runner, void *runner_context,
                         void *work);

#ifdef __cplusplus
}
#endif

#endif /* PIPEMESH_GRPC_H */
