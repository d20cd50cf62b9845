// Server side: one generic callback service routes every call by its full
// method name to a handler registered from C; each call is a self-owning
// reactor that lives until both gRPC and the handler are done with it.
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>

#include <atomic>
#include <limits>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "shim_server_internal.hpp"

using pipemesh::DropOutgoingBytes;
using pipemesh::MakeByteBuffer;
using pipemesh::SetError;

namespace {

struct MethodHandler {
  pm_method_kind kind;
  pm_server_handler function;
  void *context;
};

// Finishes at once with a fixed status (unknown methods).
class FinishingReactor final : public grpc::ServerGenericBidiReactor {
 public:
  explicit FinishingReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// One incoming call. References: one held by gRPC until OnDone, one by the
// handler from the moment it is called until pm_server_call_release. gRPC
// frees the server context after OnDone, while the handler may still hold the
// call: everything the handler can ask for is copied here at the start.
struct pm_server_call final : public grpc::ServerGenericBidiReactor {
  pm_server_call(grpc::GenericCallbackServerContext *context, MethodHandler handler)
      : peer(context->peer()), deadline(context->deadline()), handler_(handler) {
    for (const auto &entry : context->client_metadata()) {
      metadata.emplace_back(std::string(entry.first.data(), entry.first.size()),
                            std::string(entry.second.data(), entry.second.size()));
    }
    StartRead(&request_);
  }

  const std::string peer;
  const std::chrono::system_clock::time_point deadline;
  std::vector<std::pair<std::string, std::string>> metadata;

  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "the call carried no request message"));
      return;
    }
    references_.fetch_add(1, std::memory_order_relaxed);
    handler_.function(handler_.context, this,
                      pipemesh::TakeReceivedBytes(request_));
  }

  void OnWriteDone(bool ok) override {
    pm_write_done done;
    void *done_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done = std::exchange(write_done_, nullptr);
      done_context = write_done_context_;
      write_buffer_.Clear();
    }
    if (done != nullptr) done(done_context, ok ? 1 : 0);
  }

  void OnCancel() override { Cancel("call cancelled"); }

  // Ends the call with CANCELLED now, so that a slow handler cannot hold up
  // shutdown (its later finish is ignored), and tells the handler.
  void Cancel(const char *reason) {
    pm_server_cancel_handler handler;
    void *handler_context;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cancelled_ = true;
      handler = std::exchange(cancel_handler_, nullptr);
      handler_context = cancel_context_;
    }
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, reason));
    if (handler != nullptr) handler(handler_context, 1);
  }

  void OnDone() override { Unreference(); }

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
    if (finished_ || cancelled_ || write_done_ != nullptr) {
      lock.unlock();
      DropOutgoingBytes(message);
      if (done != nullptr) done(context, 0);
      return;
    }
    write_buffer_ = MakeByteBuffer(message);
    write_done_ = done;
    write_done_context_ = context;
    // Until StartWrite has registered the write, a concurrent cancel must not
    // Finish: with no operation pending, OnDone could free the stream first.
    starting_write_ = true;
    lock.unlock();
    StartWrite(&write_buffer_);
    lock.lock();
    starting_write_ = false;
    bool finish_now = deferred_finish_;
    deferred_finish_ = false;
    lock.unlock();
    if (finish_now) Finish(deferred_status_);
  }

  void FinishWith(int code, const char *message, pm_outgoing_bytes response) {
    bool has_response = code == PM_STATUS_OK && handler_.kind == PM_METHOD_UNARY;
    std::unique_lock<std::mutex> lock(mutex_);
    if (finished_) {
      lock.unlock();
      DropOutgoingBytes(response);
      return;
    }
    if (!has_response) {
      lock.unlock();
      DropOutgoingBytes(response);
      FinishOnce(grpc::Status(static_cast<grpc::StatusCode>(code),
                              message ? message : ""));
      return;
    }
    finished_ = true;
    response_ = MakeByteBuffer(response);
    lock.unlock();
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
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
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED,
                            "the handler ended without an answer"));
    Unreference();
  }


 private:
  void FinishOnce(grpc::Status status) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return;
      finished_ = true;
      if (starting_write_) {  // Write finishes once its StartWrite is in
        deferred_finish_ = true;
        deferred_status_ = std::move(status);
        return;
      }
    }
    Finish(std::move(status));
  }

  void Unreference() {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  MethodHandler handler_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  grpc::ByteBuffer write_buffer_;
  std::atomic<int> references_{1};
  std::mutex mutex_;
  bool finished_ = false;
  bool cancelled_ = false;
  pm_server_cancel_handler cancel_handler_ = nullptr;
  void *cancel_context_ = nullptr;
  pm_write_done write_done_ = nullptr;
  void *write_done_context_ = nullptr;
  bool starting_write_ = false;
  bool deferred_finish_ = false;
  grpc::Status deferred_status_;
};

namespace {

class Router final : public grpc::CallbackGenericService {
 public:
  std::map<std::string, MethodHandler> handlers;
  std::shared_ptr<const pipemesh::ReflectionIndex> reflection;
  // The services behind `handlers`, and health; set when the server starts.
  std::shared_ptr<const std::vector<std::string>> services;

  grpc::ServerGenericBidiReactor *CreateReactor(
      grpc::GenericCallbackServerContext *context) override {
    auto found = handlers.find(context->method());
    if (found != handlers.end()) return new pm_server_call(context, found->second);
    if (reflection && pipemesh::IsReflectionMethod(context->method())) {
      return pipemesh::MakeReflectionReactor(reflection, services);
    }
    return new FinishingReactor(grpc::Status(
        grpc::StatusCode::UNIMPLEMENTED,
        "unknown method " + context->method() + " on this server"));
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
  std::mutex shutdown_mutex;
  bool shut_down = false;
};

extern "C" {

pm_server *pm_server_create(const char *address,
                            const pm_transport_config *transport,
                            const uint8_t *descriptor_set,
                            size_t descriptor_set_length, pm_error *error) {
  auto server = std::make_unique<pm_server>();
  server->address = pipemesh::OrEmpty(address);
  if (transport != nullptr) server->transport = *transport;
  server->transport.tls = nullptr;  // not kept: credentials are built now
  server->credentials = ServerCredentials(transport ? transport->tls : nullptr);
  if (descriptor_set != nullptr && descriptor_set_length > 0) {
    std::string reason;
    server->router.reflection = pipemesh::BuildReflectionIndex(
        descriptor_set, descriptor_set_length, &reason);
    if (!server->router.reflection) {
      SetError(error, PM_STATUS_INVALID_ARGUMENT,
               "the descriptor set for reflection is invalid: " + reason);
      return nullptr;
    }
  }
  return server.release();
}

void pm_server_register(pm_server *server, const char *method,
                        pm_method_kind kind, pm_server_handler handler,
                        void *handler_context) {
  server->router.handlers[method] = MethodHandler{kind, handler, handler_context};
}

int pm_server_start(pm_server *server, pm_error *error) {
  std::set<std::string> services{"grpc.health.v1.Health"};
  for (const auto &entry : server->router.handlers) {
    // "/package.Service/Method" -> "package.Service"
    services.insert(entry.first.substr(1, entry.first.rfind('/') - 1));
  }
  server->router.services = std::make_shared<const std::vector<std::string>>(
      services.begin(), services.end());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(server->address, server->credentials, &port);
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
  builder.RegisterCallbackGenericService(&server->router);
  server->server = builder.BuildAndStart();
  if (!server->server || port == 0) {
    server->server.reset();
    SetError(error, PM_STATUS_UNAVAILABLE,
             "cannot listen on " + server->address +
                 " (address in use, not local, or bad TLS key/certificate)");
    return -1;
  }
  return port;
}

void pm_server_set_serving(pm_server *server, const char *service,
                           int serving) {
  if (!server->server) return;
  auto *health = server->server->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(pipemesh::OrEmpty(service), serving != 0);
  }
}

void pm_server_shutdown(pm_server *server, int64_t deadline_ms) {
  std::lock_guard<std::mutex> lock(server->shutdown_mutex);
  if (server->shut_down || !server->server) return;
  server->shut_down = true;
  auto *health = server->server->GetHealthCheckService();
  if (health != nullptr) health->Shutdown();
  server->server->Shutdown(pipemesh::DeadlineAfter(deadline_ms));
  server->server->Wait();
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
