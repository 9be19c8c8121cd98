// florence serve --index DIR [--index NAME=DIR ...] [--checkpoint CKPT] [--host 127.0.0.1] [--port 8080] [--threads 32]
#include "command.h"
#include "eval_flags.h"
#include "florence/search/builder.h"
#include "florence/search/server.h"

namespace {

using namespace florence;

void setup_serve(CLI::App& root) {
  auto* cmd = root.add_subcommand("serve", "HTTP/JSON search service with a web page over image indices");
  auto ef = std::make_shared<cli::EvalFlags>();
  auto o = std::make_shared<search::ServeOptions>();
  auto max_body = std::make_shared<std::string>("8M");
  o->threads = 32;
  cli::add_eval_flags(cmd, ef, /*checkpoint_required=*/false);
  cmd->add_option("--index", o->indices, "Index folder, or NAME=DIR (repeatable; the first is the default)")->required();
  cmd->add_option("--host", o->host, "Address to bind (loopback by default; 0.0.0.0 exposes the service)")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0 = any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--threads", o->threads,
                  "HTTP handler threads; each open keep-alive connection holds one (LibTorch threads: the global --threads)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_option("--max-batch", o->batch.max_batch, "Texts + images per batched model call")->capture_default_str()->check(cli::positive());
  cmd->add_option("--queue", o->batch.queue_capacity, "Requests waiting for the model at most (then 503)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_option("--max-body", *max_body, "Largest request body (413 above)")->capture_default_str();
  cmd->add_option("--max-pixels", o->max_pixels, "Largest decoded image (width x height) in a request (413 above)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_option("--max-k", o->max_k, "Largest k of /knn")->capture_default_str()->check(cli::positive());
  cmd->add_option("--timeout", o->timeout_seconds, "Seconds a request may wait for the model (503 after)")
      ->capture_default_str()
      ->check(cli::positive());
  cmd->add_option("--io-timeout", o->io_timeout_seconds,
                  "Seconds a client may take to send the next part of a request or take the response (then the "
                  "connection is closed); a stalled client holds one handler thread this long")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  cmd->add_option("--keep-alive", o->keep_alive_seconds,
                  "Seconds an idle keep-alive connection keeps its handler thread before it is closed")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  cmd->callback([=] {
    o->max_body_bytes = search::parse_bytes(*max_body);
    const std::string& spec = o->indices.front();
    const std::string first = spec.find('=') == std::string::npos ? spec : spec.substr(spec.find('=') + 1);
    eval::EvalModel m = eval::load_eval_model(search::index_load_options(first, ef->resolve()));
    search::serve(m, *o);
  });
}

}  // namespace

FLORENCE_COMMAND(setup_serve);
