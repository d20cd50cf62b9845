// Server side: one generic service routes every call by its full method name
// to a handler registered from C. The server's own thread polls its
// completion queue (see shim_server_internal.hpp); handlers answer from any
// thread.
#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/server_credentials.h>

#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "shim_server_internal.hpp"

using pipemesh::DropOutgoingBytes;
using pipemesh::MakeByteBuffer;
using pipemesh::ServerStream;
using pipemesh::SetError;
using pipemesh::StreamHandler;

namespace pipemesh {

ServerStream::ServerStream(std::shared_ptr<ServerGate> gate) : gate_(std::move(gate)) {}

void ServerStream::Accept(grpc::AsyncGenericService *service,
                          grpc::ServerCompletionQueue *queue, AcceptHandler accepted,
                          void *context) {
  accepted_ = accepted;
  accepted_context_ = context;
  queue_ = queue;
  // Delivered once the call is over, but only for a call that was accepted.
  this->context.AsyncNotifyWhenDone(&done_tag_);
  bool started = gate_->Run(
      [&] { service->RequestCall(&this->context, &stream_, queue, queue, &accept_tag_); });
  if (!started) {
    accepted(context, nullptr, queue, false);
    delete this;
  }
}

void ServerStream::Start(std::unique_ptr<StreamHandler> handler) {
  handler_ = std::move(handler);
  handler_->OnStart(*this);
}

void ServerStream::Complete(Operation operation, bool ok) {
  switch (operation) {
    case Operation::kAccept:
      if (!ok) {  // shutting down: no call, and no done notification follows
        accepted_(accepted_context_, nullptr, queue_, false);
        delete this;
        return;
      }
      Reference();  // for the done notification
      accepted_(accepted_context_, this, queue_, true);
      return;
    case Operation::kRead:
      handler_->OnRead(ok);
      break;
    case Operation::kWrite:
      handler_->OnWrite(ok);
      break;
    case Operation::kFinish:  // the handler hears of the end through kDone
      break;
    case Operation::kDone:
      handler_->OnDone(context.IsCancelled());
      break;
    case Operation::kAlarm:
      handler_->OnAlarm(ok);
      break;
  }
  Unreference();
}

bool ServerStream::Read(grpc::ByteBuffer *message) {
  return gate_->Run([&] {
    Reference();
    stream_.Read(message, &read_tag_);
  });
}

bool ServerStream::Write(const grpc::ByteBuffer *message) {
  return gate_->Run([&] {
    Reference();
    stream_.Write(*message, &write_tag_);
  });
}

bool ServerStream::WriteAndFinish(const grpc::ByteBuffer *message) {
  return gate_->Run([&] {
    Reference();
    stream_.WriteAndFinish(*message, grpc::WriteOptions(), grpc::Status::OK, &finish_tag_);
  });
}

bool ServerStream::Finish(const grpc::Status &status) {
  return gate_->Run([&] {
    Reference();
    stream_.Finish(status, &finish_tag_);
  });
}

bool ServerStream::SetAlarm(std::chrono::system_clock::time_point deadline) {
  return gate_->Run([&] {
    Reference();
    alarm_.emplace();
    alarm_->Set(queue_, deadline, &alarm_tag_);
  });
}

void ServerStream::Unreference() {
  if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

}  // namespace pipemesh

namespace {

struct MethodHandler {
  pm_method_kind kind;
  pm_server_handler function;
  void *context;
};

// Finishes at once with a fixed status (unknown methods).
class FinishingHandler final : public StreamHandler {
 public:
  explicit FinishingHandler(grpc::Status status) : status_(std::move(status)) {}
  void OnStart(ServerStream &stream) override { stream.Finish(status_); }

 private:
  grpc::Status status_;
};

}  // namespace

// One incoming call to a registered method. The C handler holds a reference
// on the stream from the moment it is called until pm_server_call_release;
// what it can ask for (metadata, deadline, peer) is copied at the start.
struct pm_server_call final : public StreamHandler {
  explicit pm_server_call(MethodHandler handler) : handler_(handler) {}

  std::string peer;
  // The common name of the client's verified certificate; empty without one.
  std::string peer_identity;
  std::chrono::system_clock::time_point deadline;
  std::vector<std::pair<std::string, std::string>> metadata;

  void OnStart(ServerStream &stream) override {
    stream_ = &stream;
    peer = stream.context.peer();
    auto auth = stream.context.auth_context();
    if (auth && auth->IsPeerAuthenticated()) {
      auto names = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
      // A verified certificate without a name still says a peer was verified.
      std::string name = names.empty() ? std::string() : std::string(names.front().data(), names.front().size());
      // A name with a NUL would read as its prefix on the Swift side.
      peer_identity = name.empty() ? "(no common name)"
                      : name.find('\0') != std::string::npos ? "(invalid common name)"
                                                              : name;
    }
    deadline = stream.context.deadline();
    for (const auto &entry : stream.context.client_metadata()) {
      metadata.emplace_back(std::string(entry.first.data(), entry.first.size()),
                            std::string(entry.second.data(), entry.second.size()));
    }
    stream.Read(&request_);
  }

  void OnRead(bool ok) override {
    if (!handed_over_) {
      if (!ok) {
        // A bidirectional stream may be empty; any other call needs a request.
        FinishOnce(handler_.kind == PM_METHOD_BIDI_STREAMING
                       ? grpc::Status::OK
                       : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                      "the call carried no request message"));
        return;
      }
      handed_over_ = true;
      stream_->Reference();  // released by pm_server_call_release
      handler_.function(handler_.context, this, pipemesh::TakeReceivedBytes(request_));
      return;
    }
    // A later message of a client stream, or its end.
    pm_read_done done;
    void *done_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done = std::exchange(read_done_, nullptr);
      done_context = read_done_context_;
      reading_ = false;
      if (!ok) input_ended_ = true;
    }
    pm_received_bytes message{nullptr, 0, nullptr};
    if (ok) message = pipemesh::TakeReceivedBytes(request_);
    if (done != nullptr) done(done_context, ok ? 1 : 0, message);
  }

  // Reads the next message of a client stream; a call that is over, or whose
  // stream ended, reads the end at once.
  void Read(pm_read_done done, void *context) {
    std::unique_lock<std::mutex> lock(mutex_);
    bool streams_in = handler_.kind == PM_METHOD_CLIENT_STREAMING ||
                      handler_.kind == PM_METHOD_BIDI_STREAMING;
    bool over = !streams_in || finished_ || cancelled_ || reading_ || input_ended_;
    if (!over) {
      read_done_ = done;
      read_done_context_ = context;
      reading_ = true;
      if (stream_->Read(&request_)) return;
      reading_ = false;  // the server is gone
      read_done_ = nullptr;
    }
    lock.unlock();
    if (done != nullptr) done(context, 0, pm_received_bytes{nullptr, 0, nullptr});
  }

  // A streamed write completed; a finish asked for meanwhile goes out now.
  void OnWrite(bool ok) override {
    pm_write_done done;
    void *done_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done = std::exchange(write_done_, nullptr);
      done_context = write_done_context_;
      writing_ = false;
      write_buffer_.Clear();
      if (std::exchange(deferred_finish_, false)) {
        stream_->Finish(deferred_status_);
        if (alarm_set_) stream_->CancelAlarm();
      }
    }
    if (done != nullptr) done(done_context, ok ? 1 : 0);
  }

  // The grace for a write in flight at an error finish ran out: a client
  // that does not read would keep the call open, so it ends now (the client
  // then sees CANCELLED instead of the handler's status).
  void OnAlarm(bool fired) override {
    if (!fired) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (deferred_finish_) stream_->context.TryCancel();
  }

  void OnDone(bool cancelled) override {
    if (!cancelled) return;
    pm_server_cancel_handler handler;
    void *handler_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      finished_ = true;  // nothing more can be sent
      handler = std::exchange(cancel_handler_, nullptr);
      handler_context = cancel_context_;
    }
    if (handler != nullptr) handler(handler_context, 1);
  }

  // Ends the call with CANCELLED now (a later finish is ignored) and tells
  // the handler.
  void Cancel(const char *reason) {
    pm_server_cancel_handler handler;
    void *handler_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      handler = std::exchange(cancel_handler_, nullptr);
      handler_context = cancel_context_;
    }
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, reason), /*grace=*/false);
    if (handler != nullptr) handler(handler_context, 1);
  }

  void SetCancelHandler(pm_server_cancel_handler handler, void *context) {
    bool run_now;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      run_now = cancelled_;
      if (!run_now) {
        cancel_handler_ = handler;
        cancel_context_ = context;
      }
    }
    if (run_now && handler != nullptr) handler(context, 1);
  }

  void Write(pm_outgoing_bytes message, pm_write_done done, void *context) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (finished_ || cancelled_ || writing_) {
      lock.unlock();
      DropOutgoingBytes(message);
      if (done != nullptr) done(context, 0);
      return;
    }
    write_buffer_ = MakeByteBuffer(message);
    write_done_ = done;
    write_done_context_ = context;
    writing_ = true;
    if (!stream_->Write(&write_buffer_)) {  // the server is gone
      writing_ = false;
      write_done_ = nullptr;
      write_buffer_.Clear();
      lock.unlock();
      if (done != nullptr) done(context, 0);
    }
  }

  bool WriteLast(pm_outgoing_bytes message) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_ || cancelled_ || writing_) {
      DropOutgoingBytes(message);
      return false;
    }
    finished_ = true;
    response_ = MakeByteBuffer(message);
    return stream_->WriteAndFinish(&response_);
  }

  void FinishWith(int code, const char *message, pm_outgoing_bytes response) {
    bool has_response = code == PM_STATUS_OK && (handler_.kind == PM_METHOD_UNARY ||
                                                 handler_.kind == PM_METHOD_CLIENT_STREAMING);
    if (!has_response) {
      DropOutgoingBytes(response);
      FinishOnce(grpc::Status(static_cast<grpc::StatusCode>(code), message ? message : ""));
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) {
      DropOutgoingBytes(response);
      return;
    }
    finished_ = true;
    response_ = MakeByteBuffer(response);
    stream_->WriteAndFinish(&response_);
  }

  void Release() {
    pm_server_cancel_handler handler;
    void *handler_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      handler = std::exchange(cancel_handler_, nullptr);
      handler_context = cancel_context_;
    }
    if (handler != nullptr) handler(handler_context, 0);
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the handler ended without an answer"));
    stream_->Unreference();
  }

 private:
  // Sends `status` unless the call already finished; after a pending write
  // (an error waits for it at most kErrorFinishGrace, none without `grace`).
  void FinishOnce(grpc::Status status, bool grace = true) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    if (writing_) {
      deferred_finish_ = true;
      deferred_status_ = std::move(status);
      // A write the client does not read may never complete: an error waits for it at most
      // kErrorFinishGrace, then ends the call (see OnAlarm).
      if (!deferred_status_.ok()) {
        alarm_set_ = grace && stream_->SetAlarm(std::chrono::system_clock::now() + kErrorFinishGrace);
        if (!alarm_set_) stream_->context.TryCancel();  // asked for, or the server is stopping
      }
      return;
    }
    stream_->Finish(status);
  }

  MethodHandler handler_;
  ServerStream *stream_ = nullptr;
  // The message being read: the request, then a client stream's later ones.
  grpc::ByteBuffer request_;
  // The first message went to the handler; later reads are the handler's.
  bool handed_over_ = false;
  grpc::ByteBuffer response_;
  grpc::ByteBuffer write_buffer_;
  std::mutex mutex_;
  bool finished_ = false;
  bool cancelled_ = false;
  bool writing_ = false;
  pm_server_cancel_handler cancel_handler_ = nullptr;
  void *cancel_context_ = nullptr;
  pm_write_done write_done_ = nullptr;
  void *write_done_context_ = nullptr;
  bool reading_ = false;
  bool input_ended_ = false;
  pm_read_done read_done_ = nullptr;
  void *read_done_context_ = nullptr;
  bool deferred_finish_ = false;
  grpc::Status deferred_status_;
  // How long an error finish waits for a write in flight, and whether it set an alarm for it.
  static constexpr std::chrono::seconds kErrorFinishGrace{1};
  bool alarm_set_ = false;
};

namespace {

// Routes accepted calls by method name and keeps a few accepts pending on
// the server's completion queue.
class Router {
 public:
  std::map<std::string, MethodHandler> handlers;
  grpc::AsyncGenericService service;
  std::shared_ptr<pipemesh::ServerGate> gate = std::make_shared<pipemesh::ServerGate>();

  // Runs the completion queue until it is shut down and drained.
  void Poll(grpc::ServerCompletionQueue *queue) {
    for (int i = 0; i < kPendingAccepts; ++i) AcceptNext(queue);
    void *tag;
    bool ok;
    while (queue->Next(&tag, &ok)) {
      auto *operation = static_cast<ServerStream::Tag *>(tag);
      operation->stream->Complete(operation->operation, ok);
    }
  }

 private:
  static constexpr int kPendingAccepts = 4;

  void AcceptNext(grpc::ServerCompletionQueue *queue) {
    (new ServerStream(gate))->Accept(&service, queue, &Accepted, this);
  }

  static void Accepted(void *context, ServerStream *stream, grpc::ServerCompletionQueue *queue,
                       bool ok) {
    if (!ok) return;
    auto *router = static_cast<Router *>(context);
    router->AcceptNext(queue);
    stream->Start(router->HandlerFor(stream->context.method()));
  }

  std::unique_ptr<StreamHandler> HandlerFor(const std::string &method) const {
    auto found = handlers.find(method);
    if (found != handlers.end()) return std::make_unique<pm_server_call>(found->second);
    return std::make_unique<FinishingHandler>(grpc::Status(
        grpc::StatusCode::UNIMPLEMENTED, "unknown method " + method + " on this server"));
  }
};

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const pm_tls_config *tls) {
  if (tls == nullptr) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls->require_client_certificate
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = pipemesh::OrEmpty(tls->root_certificates_pem);
  options.pem_key_cert_pairs.push_back(
      {pipemesh::OrEmpty(tls->private_key_pem),
       pipemesh::OrEmpty(tls->certificate_chain_pem)});
  return grpc::SslServerCredentials(options);
}

}  // namespace

struct pm_server {
  std::string address;
  pm_transport_config transport{};
  std::shared_ptr<grpc::ServerCredentials> credentials;
  Router router;
  std::unique_ptr<grpc::Server> server;
  // One completion queue and the one thread that polls it: grpc 1.51's epoll
  // engine lets one thread of a process wait for socket events at a time, so
  // a second poller only adds a hand-off between threads to each call.
  std::unique_ptr<grpc::ServerCompletionQueue> queue;
  std::thread poller;
  std::mutex shutdown_mutex;
  bool shut_down = false;
};

extern "C" {

pm_server *pm_server_create(const char *address,
                            const pm_transport_config *transport,
                            pm_error *error) {
  auto server = std::make_unique<pm_server>();
  server->address = pipemesh::OrEmpty(address);
  if (transport != nullptr) server->transport = *transport;
  server->transport.tls = nullptr;  // not kept: credentials are built now
  server->credentials = ServerCredentials(transport ? transport->tls : nullptr);
  (void)error;  // nothing can fail before the server starts
  return server.release();
}

void pm_server_register(pm_server *server, const char *method,
                        pm_method_kind kind, pm_server_handler handler,
                        void *handler_context) {
  server->router.handlers[method] = MethodHandler{kind, handler, handler_context};
}

int pm_server_start(pm_server *server, pm_error *error) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(server->address, server->credentials, &port);
  // grpc++ sets SO_REUSEPORT by default, so a second server on a taken port
  // would share it silently; without it the bind fails and start reports it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  int limit = pipemesh::ClampToInt(pipemesh::EffectiveMaxMessageBytes(&server->transport));
  builder.SetMaxReceiveMessageSize(limit);
  builder.SetMaxSendMessageSize(limit);
  if (server->transport.keepalive_time_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                               pipemesh::ClampToInt(server->transport.keepalive_time_ms));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  }
  if (server->transport.keepalive_timeout_ms > 0) {
    builder.AddChannelArgument(
        GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
        pipemesh::ClampToInt(server->transport.keepalive_timeout_ms));
  }
  // Clients may ping as often as every 10 s without being sent GOAWAY.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.RegisterAsyncGenericService(&server->router.service);
  server->queue = builder.AddCompletionQueue();
  server->server = builder.BuildAndStart();
  if (!server->server || port == 0) {
    server->server.reset();
    server->queue->Shutdown();
    void *tag;
    bool ok;
    while (server->queue->Next(&tag, &ok)) {
    }
    server->queue.reset();
    SetError(error, PM_STATUS_UNAVAILABLE,
             "cannot listen on " + server->address +
                 " (address in use, not local, or bad TLS key/certificate)");
    return -1;
  }
  server->poller = std::thread([router = &server->router, queue = server->queue.get()] { router->Poll(queue); });
  return port;
}

void pm_server_shutdown(pm_server *server, int64_t deadline_ms) {
  std::lock_guard<std::mutex> lock(server->shutdown_mutex);
  if (server->shut_down || !server->server) return;
  server->shut_down = true;
  server->server->Shutdown(pipemesh::DeadlineAfter(deadline_ms));
  server->server->Wait();
  // Every call is over now; what is still queued completes with ok = false.
  server->router.gate->Close();
  server->queue->Shutdown();
  server->poller.join();
}

void pm_server_destroy(pm_server *server) {
  if (server == nullptr) return;
  pm_server_shutdown(server, 0);
  delete server;
}

size_t pm_server_call_metadata_count(const pm_server_call *call) {
  return call->metadata.size();
}

pm_metadata_entry pm_server_call_metadata(const pm_server_call *call,
                                          size_t index) {
  const auto &entry = call->metadata.at(index);
  return pm_metadata_entry{entry.first.data(), entry.first.size(),
                           entry.second.data(), entry.second.size()};
}

int64_t pm_server_call_remaining_ms(const pm_server_call *call) {
  return pipemesh::MillisecondsUntil(call->deadline);
}

const char *pm_server_call_peer_identity(const pm_server_call *call) {
  return call->peer_identity.c_str();
}

const char *pm_server_call_peer(const pm_server_call *call) {
  return call->peer.c_str();
}

void pm_server_call_on_cancel(pm_server_call *call,
                              pm_server_cancel_handler handler, void *context) {
  call->SetCancelHandler(handler, context);
}

void pm_server_call_write(pm_server_call *call, pm_outgoing_bytes message,
                          pm_write_done done, void *done_context) {
  call->Write(message, done, done_context);
}

int pm_server_call_write_last(pm_server_call *call, pm_outgoing_bytes message) {
  return call->WriteLast(message) ? 1 : 0;
}

void pm_server_call_read(pm_server_call *call, pm_read_done done,
                         void *done_context) {
  call->Read(done, done_context);
}

void pm_server_call_finish(pm_server_call *call, int status_code,
                           const char *status_message,
                           pm_outgoing_bytes response) {
  call->FinishWith(status_code, status_message, response);
}

void pm_server_call_cancel(pm_server_call *call) {
  call->Cancel("the server cancelled the call");
}

void pm_server_call_release(pm_server_call *call) { call->Release(); }

}  // extern "C"
