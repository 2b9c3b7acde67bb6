// The U-Net velocity model for images (architecture: standard/unet.h).
#include "standard/unet.h"
#include "standard/util.h"

#include <torch/torch.h>

#include <cmath>
#include <numeric>
#include <optional>
#include <sstream>

#include "flowkit/domain.h"

namespace standard {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2));
}

// A layer that ends a residual branch starts at zero, so the branch starts as the identity
// (and the network's output as exactly 0).
void zero_init(torch::nn::Conv2d& c) {
  torch::NoGradGuard no_grad;
  c->weight.zero_();
  c->bias.zero_();
}

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels));
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

int64_t product(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}


}  // namespace

// ---- blocks -------------------------------------------------------------------------------

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t time_width, int64_t groups, double dropout) {
  norm1_ = register_module("norm1", group_norm(groups, in));
  conv1_ = register_module("conv1", conv(in, out, 3));
  time_ = register_module("time", flowkit::Linear(time_width, out));
  norm2_ = register_module("norm2", group_norm(groups, out));
  dropout_ = register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(dropout)));
  conv2_ = register_module("conv2", conv(out, out, 3));
  zero_init(conv2_);
  if (in != out) skip_ = register_module("skip", conv(in, out, 1));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& h, const torch::Tensor& temb) {
  torch::Tensor r = conv1_->forward(torch::silu(norm1_->forward(h)));
  r = r + time_->forward(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);  // broadcast over H, W
  r = conv2_->forward(dropout_->forward(torch::silu(norm2_->forward(r))));
  return r + (skip_ ? skip_->forward(h) : h);
}

AttentionBlockImpl::AttentionBlockImpl(int64_t channels, int64_t heads, int64_t groups) : heads_(heads) {
  norm_ = register_module("norm", group_norm(groups, channels));
  qkv_ = register_module("qkv", conv(channels, 3 * channels, 1));
  proj_ = register_module("proj", conv(channels, channels, 1));
  zero_init(proj_);
}

torch::Tensor AttentionBlockImpl::forward(const torch::Tensor& h) {
  const int64_t B = h.size(0), C = h.size(1), N = h.size(2) * h.size(3), d = C / heads_;
  torch::Tensor qkv = qkv_->forward(norm_->forward(h)).reshape({B, 3, heads_, d, N});
  torch::Tensor q = qkv.select(1, 0), k = qkv.select(1, 1), v = qkv.select(1, 2);  // [B, heads, d, N]
  // weights[b, head, i, j]: how much position i reads from position j.
  torch::Tensor weights = torch::softmax(torch::matmul(q.transpose(-1, -2), k) / std::sqrt(static_cast<double>(d)), -1);
  torch::Tensor a = torch::matmul(v, weights.transpose(-1, -2));  // [B, heads, d, N]
  return h + proj_->forward(a.reshape(h.sizes()));
}

UNetStageImpl::UNetStageImpl(int64_t in, int64_t out, const UNetOptions& o, bool attention) {
  for (int64_t i = 0; i < o.res_blocks; ++i) {
    blocks_.push_back(register_module("block" + std::to_string(i),
                                      ResBlock(i == 0 ? in : out, out, o.time_width(), o.groups, o.dropout)));
    if (attention) attention_.push_back(register_module("attention" + std::to_string(i), AttentionBlock(out, o.heads, o.groups)));
  }
}

torch::Tensor UNetStageImpl::forward(torch::Tensor h, const torch::Tensor& temb) {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    h = blocks_[i]->forward(h, temb);
    if (!attention_.empty()) h = attention_[i]->forward(h);
  }
  return h;
}

// ---- network ------------------------------------------------------------------------------

UNetNetImpl::UNetNetImpl(const UNetOptions& o) : options_(o), time_embedding_(o.time_embedding_dim, 1000.0) {
  const int64_t L = o.levels(), E = o.time_width(), bottom = o.level_channels(L - 1);
  time1_ = register_module("time1", flowkit::Linear(o.time_embedding_dim, E));
  time2_ = register_module("time2", flowkit::Linear(E, E));
  if (o.class_conditional) label_embedding_ = register_module("label_embedding", torch::nn::Embedding(o.num_classes + 1, E));
  input_ = register_module("input", conv(o.image_shape.at(0), o.channels, 3));

  for (int64_t l = 0; l < L; ++l) {
    const int64_t in = l == 0 ? o.channels : o.level_channels(l - 1);
    down_.push_back(register_module("down" + std::to_string(l), UNetStage(in, o.level_channels(l), o, o.attention && l == L - 1)));
    if (l + 1 < L)
      downsample_.push_back(register_module("downsample" + std::to_string(l), conv(o.level_channels(l), o.level_channels(l), 3, 2)));
  }
  middle1_ = register_module("middle1", ResBlock(bottom, bottom, E, o.groups, o.dropout));
  if (o.attention) middle_attention_ = register_module("middle_attention", AttentionBlock(bottom, o.heads, o.groups));
  middle2_ = register_module("middle2", ResBlock(bottom, bottom, E, o.groups, o.dropout));
  for (int64_t l = 0; l < L; ++l) {
    // The up stage reads its own output of the level below (upsampled) beside the skip.
    const int64_t ch = o.level_channels(l);
    up_.push_back(register_module("up" + std::to_string(l), UNetStage(2 * ch, ch, o, o.attention && l == L - 1)));
    if (l + 1 < L) upsample_.push_back(register_module("upsample" + std::to_string(l), conv(o.level_channels(l + 1), ch, 3)));
  }
  output_norm_ = register_module("output_norm", group_norm(o.groups, o.level_channels(0)));
  output_ = register_module("output", conv(o.level_channels(0), o.image_shape.at(0), 3));
  zero_init(output_);
}

torch::Tensor UNetNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label) {
  const int64_t L = options_.levels();
  torch::Tensor temb = time2_->forward(torch::silu(time1_->forward(time_embedding_(t))));
  if (options_.class_conditional) {
    torch::Tensor l = label.defined() ? label : torch::full({x.size(0)}, options_.num_classes,
                                                              torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    temb = temb + label_embedding_->forward(l);
  }

  torch::Tensor h = input_->forward(x);
  std::vector<torch::Tensor> skips;
  for (int64_t l = 0; l < L; ++l) {
    h = down_[l]->forward(h, temb);
    skips.push_back(h);
    if (l + 1 < L) h = downsample_[l]->forward(h);
  }
  h = middle1_->forward(h, temb);
  if (options_.attention) h = middle_attention_->forward(h);
  h = middle2_->forward(h, temb);
  for (int64_t l = L - 1; l >= 0; --l) {
    h = up_[l]->forward(torch::cat({h, skips[l]}, 1), temb);
    if (l > 0) {
      namespace F = torch::nn::functional;
      h = F::interpolate(h, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{2 * h.size(2), 2 * h.size(3)})
                                .mode(torch::kNearest));
      h = upsample_[l - 1]->forward(h);
    }
  }
  return output_->forward(torch::silu(output_norm_->forward(h)));
}

// ---- model --------------------------------------------------------------------------------

UNetModel::UNetModel(const UNetOptions& options, const std::string& device) : net_(options) {
  net_->to(torch::Device(device));
}

torch::Tensor UNetModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  const UNetOptions& o = net_->options();
  const int64_t B = x.size(0);
  torch::Tensor tt = t.to(x.device(), x.scalar_type());
  if (tt.dim() == 0) tt = tt.expand({B});
  torch::Tensor label;
  if (o.class_conditional && cond.has("label")) label = cond.at("label").to(x.device(), torch::kLong).reshape({B});
  torch::Tensor image = x.reshape({B, o.image_shape[0], o.image_shape[1], o.image_shape[2]});
  return net_->forward(image, tt.reshape({B}), label).reshape(x.sizes());
}

// ---- configuration ------------------------------------------------------------------------

UNetOptions unet_options(const flowkit::Config& cfg) {
  UNetOptions o;
  o.channels = cfg.get<int64_t>("channels");
  o.channel_mult = positive_integers(cfg, "channel_mult", cfg.get<nlohmann::json>("channel_mult"));
  o.res_blocks = cfg.get<int64_t>("res_blocks");
  o.groups = cfg.get<int64_t>("groups");
  o.attention = cfg.get<bool>("attention");
  o.heads = cfg.get<int64_t>("heads");
  o.dropout = cfg.get<double>("dropout");
  o.time_embedding_dim = cfg.get<int64_t>("time_embedding_dim");
  o.class_conditional = cfg.get<bool>("class_conditional");
  if (std::optional<nlohmann::json> shape = cfg.optional<nlohmann::json>("image_shape")) {
    o.image_shape = positive_integers(cfg, "image_shape", *shape);
    if (o.image_shape.size() != 3) cfg.fail("image_shape", "expected [channels, height, width], found " + shape->dump());
  }

  if (o.channel_mult.empty()) cfg.fail("channel_mult", "expected at least one level, found []");
  // Every level's channel count is a multiple of `channels`, so this is the one check every
  // group norm (over channels, ch_l, 2 ch_l) needs.
  if (o.channels % o.groups != 0)
    cfg.fail("channels", "channels = " + std::to_string(o.channels) + " is not a multiple of groups = " + std::to_string(o.groups) +
                             " (every group norm splits its channels into equal groups)");
  const int64_t bottom = o.level_channels(o.levels() - 1);
  if (o.attention && bottom % o.heads != 0)
    cfg.fail("heads", "the lowest level has " + std::to_string(o.channels) + " x " + std::to_string(o.channel_mult.back()) + " = " +
                          std::to_string(bottom) + " channels, not a multiple of heads = " + std::to_string(o.heads));
  return o;
}

std::unique_ptr<flowkit::Component> make_unet(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  UNetOptions o = unet_options(cfg);
  if (!ctx.domain) cfg.fail("type", "standard.unet needs a domain (for the image shape), but the pipeline has none");
  const std::vector<int64_t> item = ctx.domain->item_shape();
  if (item.empty()) cfg.fail("type", "standard.unet needs a domain with a fixed item shape");
  if (o.image_shape.empty()) {
    if (item.size() != 3)
      cfg.fail("image_shape", "the domain's items have shape " + shape_text(item) +
                                  ", not [C, H, W]; give image_shape to read them as images (its product must be " +
                                  std::to_string(product(item)) + ")");
    o.image_shape = item;
  } else if (product(o.image_shape) != product(item)) {
    cfg.fail("image_shape", shape_text(o.image_shape) + " holds " + std::to_string(product(o.image_shape)) +
                                " values, but the domain's items " + shape_text(item) + " hold " + std::to_string(product(item)));
  }
  const int64_t halvings = o.levels() - 1, H = o.image_shape[1], W = o.image_shape[2];
  const bool halves = halvings < 62 && H % (int64_t{1} << halvings) == 0 && W % (int64_t{1} << halvings) == 0;
  if (!halves)
    cfg.fail("channel_mult", std::to_string(o.levels()) + " levels halve the image " + std::to_string(halvings) +
                                 " time(s), so its height and width must divide by 2^" + std::to_string(halvings) +
                                 (halvings < 62 ? " = " + std::to_string(int64_t{1} << halvings) : std::string()) + ", but the image is " +
                                 std::to_string(H) + " x " + std::to_string(W));
  if (o.class_conditional) {
    o.num_classes = ctx.domain->num_classes();
    if (o.num_classes <= 0) cfg.fail("class_conditional", "the domain has no labels (num_classes is 0)");
  }
  return std::make_unique<UNetModel>(o, ctx.device);
}

}  // namespace standard
