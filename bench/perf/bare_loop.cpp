// flowkit-bare-loop: the standard CFM training step written directly against LibTorch, with
// no flowkit in it (same network as standard.mlp, CondOT path, AdamW, loss.item() per step),
// to measure the framework's own overhead; and the machine's matmul GFLOP/s per thread count.
//   flowkit-bare-loop train --batch 256 --steps 300 --warmup 30 [--intra 1] [--blas 0]
//   flowkit-bare-loop matmul
// One JSON line on stdout.
#include <dlfcn.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>
#include <algorithm>
#include <string>

namespace {

void set_blas_threads(int n) {
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Net : torch::nn::Module {
  Net(int64_t dim, int64_t hidden, int64_t layers, int64_t temb) : temb_(temb) {
    time1 = register_module("time1", torch::nn::Linear(temb, hidden));
    time2 = register_module("time2", torch::nn::Linear(hidden, hidden));
    input = register_module("input", torch::nn::Linear(dim, hidden));
    for (int64_t i = 1; i < layers; ++i) hidden_layers.push_back(register_module("h" + std::to_string(i), torch::nn::Linear(hidden, hidden)));
    output = register_module("output", torch::nn::Linear(hidden, dim));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) {
    const int64_t half = temb_ / 2;
    torch::Tensor freqs = torch::exp(-std::log(10000.0) * torch::arange(half, t.options()) / half);
    torch::Tensor args = 1000.0 * t.reshape({-1, 1}) * freqs.reshape({1, -1});
    torch::Tensor emb = torch::cat({torch::sin(args), torch::cos(args)}, 1);
    torch::Tensor h = torch::silu(input->forward(x) + time2->forward(torch::silu(time1->forward(emb))));
    for (auto& l : hidden_layers) h = torch::silu(l->forward(h));
    return output->forward(h);
  }
  int64_t temb_;
  torch::nn::Linear time1{nullptr}, time2{nullptr}, input{nullptr}, output{nullptr};
  std::vector<torch::nn::Linear> hidden_layers;
};

int train(int64_t batch, int64_t steps, int64_t warmup) {
  torch::manual_seed(0);
  Net net(2, 256, 3, 32);
  torch::optim::AdamW opt(net.parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.0));
  torch::Tensor centers = [] {
    torch::Tensor a = torch::arange(8, torch::kDouble) * (M_PI / 4);
    return torch::stack({torch::cos(a), torch::sin(a)}, 1) * (2 * std::sqrt(2.0));
  }();
  double first = 0, last = 0;
  auto step = [&](int64_t s, int64_t total) {
    const double lr = 1e-3 * 0.5 * (1 + std::cos(M_PI * static_cast<double>(s) / static_cast<double>(total)));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    torch::Tensor k = torch::randint(0, 8, {batch}, torch::kLong);
    torch::Tensor x1 = (centers.index_select(0, k) + (0.5 / std::sqrt(2.0)) * torch::randn({batch, 2}, torch::kDouble)).to(torch::kFloat);
    torch::Tensor x0 = torch::randn_like(x1);
    torch::Tensor t = torch::rand({batch});
    torch::Tensor tt = t.reshape({-1, 1});
    torch::Tensor loss = (net.forward(tt * x1 + (1 - tt) * x0, t) - (x1 - x0)).pow(2).mean();
    const double v = loss.item<double>();
    opt.zero_grad();
    loss.backward();
    opt.step();
    return v;
  };
  const int64_t total = warmup + steps;
  for (int64_t s = 0; s < warmup; ++s) step(s, total);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = warmup; s < total; ++s) {
    double v = step(s, total);
    if (s < warmup + 10) first += v / 10;
    if (s >= total - 10) last += v / 10;
  }
  const double secs = seconds_since(t0);
  std::printf("{\"workload\": \"bare_cfm_toy2d_b%lld\", \"steps_per_sec\": %.4f, \"loss_first\": %.5f, \"loss_last\": %.5f, \"intra_threads\": %d}\n",
              static_cast<long long>(batch), static_cast<double>(steps) / secs, first, last, torch::get_num_threads());
  return 0;
}

// Median GFLOP/s of an [m, k] x [k, n] float product.
double matmul_gflops(int64_t m, int64_t k, int64_t n) {
  torch::Tensor a = torch::randn({m, k}), b = torch::randn({k, n});
  torch::Tensor c = torch::mm(a, b);
  std::vector<double> rates;
  for (int r = 0; r < 7; ++r) {
    const int reps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) torch::mm_out(c, a, b);
    rates.push_back(2.0 * m * k * n * reps / seconds_since(t0) / 1e9);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

// Milliseconds of the matrix products alone of one CFM step of the toy MLP (hidden 256,
// 3 layers, time embedding 32) at `batch`, each in the layout autograd uses: forward
// addmm(b, X, W^T); backward dX = G W (where the input needs a gradient) and dW = G^T X.
// Median of 7. 1000 / this is what the step could reach if nothing but its GEMMs took time.
double step_gemms_ms(int64_t batch) {
  struct Layer { int64_t in, out; bool input_grad; };
  const std::vector<Layer> layers{{32, 256, false}, {256, 256, true}, {2, 256, false}, {256, 256, true}, {256, 256, true}, {256, 2, true}};
  struct Buffers { torch::Tensor x, w, b, g, y, dx, dw; };
  std::vector<Buffers> buf;
  for (const auto& l : layers)
    buf.push_back({torch::randn({batch, l.in}), torch::randn({l.out, l.in}), torch::randn({l.out}), torch::randn({batch, l.out}),
                   torch::empty({batch, l.out}), torch::empty({batch, l.in}), torch::empty({l.out, l.in})});
  auto once = [&] {
    for (size_t i = 0; i < layers.size(); ++i) {
      Buffers& t = buf[i];
      torch::addmm_out(t.y, t.b, t.x, t.w.t());
      if (layers[i].input_grad) torch::mm_out(t.dx, t.g, t.w);
      torch::mm_out(t.dw, t.g.t(), t.x);
    }
  };
  once();
  std::vector<double> ms;
  for (int r = 0; r < 7; ++r) {
    const int reps = 5;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) once();
    ms.push_back(1000.0 * seconds_since(t0) / reps);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  int64_t batch = 256, steps = 300, warmup = 30;
  int intra = 1, blas = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (k == "--batch") batch = v;
    else if (k == "--steps") steps = v;
    else if (k == "--warmup") warmup = v;
    else if (k == "--intra") intra = static_cast<int>(v);
    else if (k == "--blas") blas = static_cast<int>(v);
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  torch::set_num_threads(intra);
  if (blas > 0) set_blas_threads(blas);
  if (mode == "train") return train(batch, steps, warmup);
  if (mode == "matmul") {
    std::printf("{\"workload\": \"matmul\"");
    for (int threads : {1, 2}) {
      set_blas_threads(threads);
      // The shapes of the batch-4096 step (hidden 256), and a large square product.
      std::printf(", \"gflops_%dt_4096x256x256\": %.2f, \"gflops_%dt_1024sq\": %.2f, \"step_gemms_ms_%dt_b4096\": %.3f", threads,
                  matmul_gflops(4096, 256, 256), threads, matmul_gflops(1024, 1024, 1024), threads, step_gemms_ms(4096));
    }
    std::printf("}\n");
    return 0;
  }
  std::fprintf(stderr, "usage: flowkit-bare-loop train|matmul [--batch B --steps N --warmup W --intra T --blas T]\n");
  return 2;
}
