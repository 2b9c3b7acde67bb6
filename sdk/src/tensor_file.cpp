// Name→tensor dictionaries in torch.save's format: written with torch::pickle_save, read by our own
// checked zip and pickle readers (LibTorch's are unsafe on damaged files; see check_archive).
#include "flowkit/tensor_file.h"

#include <nlohmann/json.hpp>

#include <caffe2/serialize/versions.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "flowkit/error.h"
#include "flowkit/io.h"
#include "flowkit/safetensors.h"

namespace flowkit::io {
namespace {

// Reads n bytes at pos; false when they are not all inside the file.
using ReadAt = std::function<bool(uint64_t pos, size_t n, std::string* out)>;

uint64_t le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

// Where each record's bytes lie, by its name inside the archive's folder.
struct ArchiveIndex {
  std::map<std::string, std::pair<uint64_t, uint64_t>> records;  // name -> (offset, size)
};

ArchiveIndex check_archive(const ReadAt& read, uint64_t size, const std::string& path, const std::string& required) {
  const std::string where = "'" + path + "' is not a readable tensor archive (torch.save format): ";
  auto fail = [&](const std::string& why) { throw Error(where + why); };
  if (size < 22) fail("too short to be a zip archive");
  // The end-of-central-directory record: the last 22 bytes plus up to 65535 of comment.
  const uint64_t tail_size = std::min<uint64_t>(size, 22 + 65535);
  std::string tail;
  if (!read(size - tail_size, static_cast<size_t>(tail_size), &tail)) fail("cannot read its end");
  size_t e = std::string::npos;
  for (size_t i = tail.size() - 22 + 1; i-- > 0;)
    if (le(tail, i, 4) == 0x06054b50 && i + 22 + le(tail, i + 20, 2) <= tail.size()) {
      e = i;
      break;
    }
  if (e == std::string::npos) fail("no zip end-of-central-directory record");
  const uint64_t eocd = size - tail_size + e;
  uint64_t entries = le(tail, e + 10, 2), cd_size = le(tail, e + 12, 4), cd_offset = le(tail, e + 16, 4);
  uint64_t cd_end_limit = eocd;
  if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {  // zip64
    std::string loc, rec;
    if (eocd < 20 || !read(eocd - 20, 20, &loc) || le(loc, 0, 4) != 0x07064b50) fail("no zip64 locator");
    const uint64_t at = le(loc, 8, 8);
    if (at > eocd - 20 || !read(at, 56, &rec) || le(rec, 0, 4) != 0x06064b50) fail("bad zip64 end record");
    entries = le(rec, 32, 8), cd_size = le(rec, 40, 8), cd_offset = le(rec, 48, 8);
    cd_end_limit = at;
  }
  if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset) fail("its central directory lies outside the file");
  if (entries == 0 || entries > cd_size / 46) fail("its central directory holds " + std::to_string(entries) + " entries in " +
                                                    std::to_string(cd_size) + " bytes");
  std::string cd;
  if (!read(cd_offset, static_cast<size_t>(cd_size), &cd)) fail("cannot read its central directory");
  ArchiveIndex index;
  std::string prefix;
  bool has_version = false, has_required = required.empty();
  size_t p = 0;
  for (uint64_t n = 0; n < entries; ++n) {
    if (p + 46 > cd.size() || le(cd, p, 4) != 0x02014b50) fail("central directory entry " + std::to_string(n) + " is damaged");
    const uint64_t method = le(cd, p + 10, 2), name_len = le(cd, p + 28, 2), extra_len = le(cd, p + 30, 2),
                   comment_len = le(cd, p + 32, 2);
    uint64_t compressed = le(cd, p + 20, 4), uncompressed = le(cd, p + 24, 4), local = le(cd, p + 42, 4);
    if (p + 46 + name_len + extra_len + comment_len > cd.size()) fail("central directory entry " + std::to_string(n) + " overruns it");
    const std::string name = cd.substr(p + 46, name_len);
    // zip64 sizes and offset: extra field 0x0001 holds the saturated ones, in this order.
    for (size_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint64_t id = le(cd, x, 2), len = le(cd, x + 2, 2);
      if (x + 4 + len > p + 46 + name_len + extra_len) fail("entry '" + name + "' has a damaged extra field");
      if (id == 1) {
        size_t v = x + 4;
        for (uint64_t* field : {&uncompressed, &compressed, &local})
          if (*field == 0xffffffff) {
            if (v + 8 > x + 4 + len) fail("entry '" + name + "' has a short zip64 field");
            *field = le(cd, v, 8), v += 8;
          }
      }
      x += 4 + len;
    }
    // Pickles and tensor data are stored uncompressed (so that tensors can be mapped); only the
    // TorchScript code of a checkpoint is deflated, with a size deflate can reach.
    const bool stored_only = name.size() > 4 && (name.compare(name.size() - 4, 4, ".pkl") == 0 || name.find("/data/") != std::string::npos);
    if (method != 0 && (method != 8 || stored_only))
      fail("entry '" + name + "' is compressed (method " + std::to_string(method) + ")");
    if (method == 0 && compressed != uncompressed) fail("entry '" + name + "' is stored with two different sizes");
    if (method == 8 && (uncompressed > (uint64_t{1} << 30) || uncompressed > 1100 * compressed + 1024))
      fail("entry '" + name + "' claims " + std::to_string(uncompressed) + " bytes from " + std::to_string(compressed));
    std::string lh;
    if (local > cd_offset || cd_offset - local < 30 || !read(local, 30, &lh) || le(lh, 0, 4) != 0x04034b50)
      fail("entry '" + name + "' has no local header inside the file");
    const uint64_t data = local + 30 + le(lh, 26, 2) + le(lh, 28, 2);
    if (data > cd_offset || compressed > cd_offset - data) fail("entry '" + name + "' lies outside the file");
    const size_t slash = name.find('/');
    if (slash == std::string::npos || slash == 0) fail("entry '" + name + "' is not inside the archive's folder");
    if (prefix.empty()) prefix = name.substr(0, slash + 1);
    if (name.compare(0, prefix.size(), prefix) != 0) fail("entries lie in two folders ('" + prefix + "', '" + name + "')");
    const std::string rest = name.substr(prefix.size());
    if (rest == "version" || rest == ".data/version") {  // a small decimal number, as LibTorch checks it
      std::string v;
      if (method != 0 || compressed > 16 || !read(data, static_cast<size_t>(compressed), &v) || v.empty() ||
          v.find_first_not_of("0123456789\n") != std::string::npos || v[0] == '\n')
        fail("its version record is damaged");
      const uint64_t version = std::stoull(v);
      if (version < caffe2::serialize::kMinSupportedFileFormatVersion ||
          version > caffe2::serialize::kMaxSupportedFileFormatVersion)
        fail("its format version " + std::to_string(version) + " is outside what this LibTorch reads (" +
             std::to_string(caffe2::serialize::kMinSupportedFileFormatVersion) + " to " +
             std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion) + ")");
      has_version = true;
    }
    has_required |= rest == required;
    index.records[rest] = {data, compressed};
    p += 46 + name_len + extra_len + comment_len;
  }
  if (!has_version) fail("it has no version record");
  if (!has_required) fail("it has no '" + required + "' record");
  return index;
}

// The subset of pickle that a dict of tensors is written with (torch.save, torch::pickle_save),
// read without LibTorch's unpickler, which corrupts memory on crafted input (tests/fuzz found a
// free of a non-heap pointer). Like torch.load(weights_only=True), it calls nothing but the
// tensor rebuild and an empty OrderedDict.
class TensorDictUnpickler {
 public:
  using Fail = std::function<void(const std::string&)>;
  TensorDictUnpickler(std::string pickle, const ArchiveIndex& index, const ReadAt& read, Fail fail)
      : p_(std::move(pickle)), index_(index), read_(read), fail_(std::move(fail)) {}

  TensorDict run() {
    while (true) {
      if (i_ >= p_.size()) fail_("its pickle ends without STOP");
      const auto op = static_cast<unsigned char>(p_[i_++]);
      switch (op) {
        case 0x80: take(1); break;                      // PROTO
        case 0x95: take(8); break;                      // FRAME
        case '}': push(Value::dict()); break;           // EMPTY_DICT
        case ')': push(Value::tuple({})); break;        // EMPTY_TUPLE
        case '(': marks_.push_back(stack_.size()); break;
        case 'N': push(Value{}); break;
        case 0x88: push(Value::integer(1)); break;      // NEWTRUE
        case 0x89: push(Value::integer(0)); break;      // NEWFALSE
        case 'K': push(Value::integer(static_cast<int64_t>(le(take(1), 0, 1)))); break;
        case 'M': push(Value::integer(static_cast<int64_t>(le(take(2), 0, 2)))); break;
        case 'J': push(Value::integer(static_cast<int32_t>(le(take(4), 0, 4)))); break;
        case 0x8a: {                                    // LONG1: little-endian two's complement
          const std::string b = take(le(take(1), 0, 1));
          if (b.size() > 8) fail_("its pickle has an integer wider than 64 bits");
          uint64_t v = b.empty() ? 0 : le(b, 0, static_cast<int>(b.size()));
          if (!b.empty() && b.size() < 8 && (static_cast<unsigned char>(b.back()) & 0x80)) v |= ~uint64_t{0} << (8 * b.size());
          push(Value::integer(static_cast<int64_t>(v)));
          break;
        }
        case 'X': push(Value::string(take(le(take(4), 0, 4)))); break;     // BINUNICODE
        case 0x8c: push(Value::string(take(le(take(1), 0, 1)))); break;    // SHORT_BINUNICODE
        case 'c': {                                                          // GLOBAL
          const std::string module = line(), name = line();
          push(Value::global(module + "." + name));
          break;
        }
        case 'q': memo(le(take(1), 0, 1)); break;                           // BINPUT
        case 'r': memo(le(take(4), 0, 4)); break;                           // LONG_BINPUT
        case 0x94: memo(memo_.size()); break;                               // MEMOIZE
        case 'h': recall(le(take(1), 0, 1)); break;                         // BINGET
        case 'j': recall(le(take(4), 0, 4)); break;                         // LONG_BINGET
        case 't': push(Value::tuple(pop_to_mark())); break;
        case 0x85: case 0x86: case 0x87: {                                  // TUPLE1..3
          const size_t n = op - 0x84;
          if (stack_.size() < n + floor()) fail_("its pickle's stack runs empty");
          std::vector<Value> items(stack_.end() - static_cast<long>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(Value::tuple(std::move(items)));
          break;
        }
        case 'Q': push(storage(pop())); break;                              // BINPERSID
        case 'R': {                                                          // REDUCE
          Value args = pop(), callable = pop();
          push(call(callable, args));
          break;
        }
        case 's': case 'u': {                                                // SETITEM(S)
          std::vector<Value> items = op == 'u' ? pop_to_mark() : std::vector<Value>{};
          if (op == 's') {
            Value v = pop(), k = pop();
            items = {k, v};
          }
          if (items.size() % 2) fail_("its pickle sets a key without a value");
          Value& d = top();
          if (d.kind != Value::Dict) fail_("its pickle sets items on something that is not a dict");
          for (size_t k = 0; k < items.size(); k += 2) {
            if (items[k].kind != Value::String) fail_("a key is not a name");
            if (items[k + 1].kind != Value::Tensor) fail_("'" + items[k].text + "' is not a tensor");
            for (const auto& [name, t] : d.entries)
              if (name == items[k].text) fail_("'" + name + "' appears twice");
            d.entries.emplace_back(items[k].text, items[k + 1].tensor);
          }
          break;
        }
        case '.': {                                                          // STOP
          Value result = pop();
          if (result.kind != Value::Dict) fail_("it holds no dictionary of tensors");
          return result.entries;
        }
        default: fail_("its pickle uses opcode " + std::to_string(op) + ", which a tensor file does not");
      }
    }
  }

 private:
  struct Value {
    enum Kind { None, Int, String, Global, Tuple, Dict, Storage, Tensor } kind = None;
    int64_t number = 0;
    std::string text;  // string, global's "module.name", storage's key
    std::vector<Value> items;
    TensorDict entries;
    torch::Tensor tensor;  // a storage (1-D, whole) or a tensor
    static Value integer(int64_t v) { Value x; x.kind = Int, x.number = v; return x; }
    static Value string(std::string s) { Value x; x.kind = String, x.text = std::move(s); return x; }
    static Value global(std::string s) { Value x; x.kind = Global, x.text = std::move(s); return x; }
    static Value tuple(std::vector<Value> v) { Value x; x.kind = Tuple, x.items = std::move(v); return x; }
    static Value dict() { Value x; x.kind = Dict; return x; }
  };

  std::string take(uint64_t n) {
    if (n > p_.size() - i_) fail_("its pickle is truncated or claims " + std::to_string(n) + " bytes at byte " + std::to_string(i_));
    std::string s = p_.substr(i_, n);
    i_ += n;
    return s;
  }
  std::string line() {
    const size_t nl = p_.find('\n', i_);
    if (nl == std::string::npos || nl - i_ > 256) fail_("its pickle has a bad global name");
    std::string s = p_.substr(i_, nl - i_);
    i_ = nl + 1;
    return s;
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value v) {
    if (stack_.size() > 100000) fail_("its pickle's stack grows without bound");
    stack_.push_back(std::move(v));
  }
  Value& top() {
    if (stack_.size() <= floor()) fail_("its pickle's stack runs empty");
    return stack_.back();
  }
  Value pop() {
    Value v = std::move(top());
    stack_.pop_back();
    return v;
  }
  std::vector<Value> pop_to_mark() {
    if (marks_.empty()) fail_("its pickle closes a MARK it never opened");
    std::vector<Value> items(stack_.begin() + static_cast<long>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  void memo(uint64_t k) {
    if (k > 1000000) fail_("its pickle's memo index is out of range");
    memo_[k] = top();
  }
  void recall(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail_("its pickle recalls memo " + std::to_string(k) + ", which was never stored");
    push(it->second);
  }

  // ('storage', torch.<Type>Storage, key, location, numel) -> the record data/<key> as a 1-D tensor.
  Value storage(const Value& id) {
    static const std::map<std::string, torch::ScalarType> kTypes = {
        {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble}, {"torch.HalfStorage", torch::kHalf},
        {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.LongStorage", torch::kLong}, {"torch.IntStorage", torch::kInt},
        {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar}, {"torch.ByteStorage", torch::kByte},
        {"torch.BoolStorage", torch::kBool}};
    const auto& f = id.items;
    if (id.kind != Value::Tuple || f.size() != 5 || f[0].kind != Value::String || f[0].text != "storage" ||
        f[1].kind != Value::Global || f[2].kind != Value::String || f[4].kind != Value::Int || f[4].number < 0)
      fail_("its pickle refers to something other than a tensor storage");
    auto type = kTypes.find(f[1].text);
    if (type == kTypes.end()) fail_("its pickle has a storage of type " + f[1].text);
    auto cached = storages_.find(f[2].text);
    if (cached != storages_.end()) return cached->second;
    auto record = index_.records.find("data/" + f[2].text);
    if (record == index_.records.end()) fail_("it has no record data/" + f[2].text);
    const auto elem = static_cast<uint64_t>(c10::elementSize(type->second));
    const auto numel = static_cast<uint64_t>(f[4].number);
    if (numel > record->second.second / elem) fail_("record data/" + f[2].text + " is shorter than its " + std::to_string(numel) + " values");
    std::string bytes;
    if (!read_(record->second.first, static_cast<size_t>(numel * elem), &bytes)) fail_("cannot read data/" + f[2].text);
    Value v;
    v.kind = Value::Storage;
    v.tensor = torch::empty({static_cast<int64_t>(numel)}, torch::TensorOptions().dtype(type->second));
    if (numel > 0) std::memcpy(v.tensor.data_ptr(), bytes.data(), bytes.size());
    return storages_[f[2].text] = v;
  }

  std::vector<int64_t> ints(const Value& t, const char* what) {
    if (t.kind != Value::Tuple || t.items.size() > 64) fail_(std::string("its tensor ") + what + " is not a tuple of integers");
    std::vector<int64_t> out;
    for (const auto& v : t.items) {
      if (v.kind != Value::Int || v.number < 0) fail_(std::string("its tensor ") + what + " is not a tuple of integers");
      out.push_back(v.number);
    }
    return out;
  }

  Value call(const Value& callable, const Value& args) {
    if (callable.kind != Value::Global || args.kind != Value::Tuple) fail_("its pickle calls something that is not a global");
    if (callable.text == "collections.OrderedDict") {
      if (!args.items.empty()) fail_("its pickle builds a non-empty OrderedDict (tensor hooks)");
      return Value::dict();
    }
    if (callable.text == "torch.jit._pickle.restore_type_tag") {  // LibTorch's pickler tags a typed dict
      if (args.items.size() != 2 || args.items[0].kind != Value::Dict || args.items[1].kind != Value::String)
        fail_("its pickle tags something that is not a dict");
      return args.items[0];
    }
    if (callable.text != "torch._utils._rebuild_tensor_v2")
      fail_("its pickle calls " + callable.text + ", which a tensor file does not");
    const auto& a = args.items;
    if (a.size() < 4 || a[0].kind != Value::Storage || a[1].kind != Value::Int)
      fail_("its pickle rebuilds a tensor from bad arguments");
    const std::vector<int64_t> size = ints(a[2], "size"), stride = ints(a[3], "stride");
    if (size.size() != stride.size()) fail_("its tensor's size and stride differ in length");
    Value v;
    v.kind = Value::Tensor;
    // The furthest element must lie inside the storage (checked before any view exists).
    uint64_t last = static_cast<uint64_t>(a[1].number);
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      empty |= size[d] == 0;
      uint64_t extent = 0;
      if (size[d] > 0 && (__builtin_mul_overflow(static_cast<uint64_t>(size[d] - 1), static_cast<uint64_t>(stride[d]), &extent) ||
                          __builtin_add_overflow(last, extent, &last)))
        fail_("its tensor's sizes overflow");
    }
    if (!empty && (a[1].number < 0 || last >= static_cast<uint64_t>(a[0].tensor.numel())))
      fail_("its tensor reaches past its storage");
    v.tensor = a[0].tensor.as_strided(size, stride, empty ? 0 : a[1].number);
    return v;
  }

  std::string p_;
  size_t i_ = 0;
  const ArchiveIndex& index_;
  const ReadAt& read_;
  Fail fail_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Value> memo_;
  std::map<std::string, Value> storages_;
};

}  // namespace

const torch::Tensor* find_tensor(const TensorDict& tensors, const std::string& name) {
  for (const auto& [key, t] : tensors)
    if (key == name) return &t;
  return nullptr;
}

void write_tensor_dict(const std::string& path, const TensorDict& tensors) {
  c10::Dict<std::string, torch::Tensor> dict;
  // A copy of each: a view (of a flat parameter buffer, say) would pickle its whole storage.
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().cpu().clone(at::MemoryFormat::Contiguous));
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

TensorDict read_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return parse_tensor_dict(bytes.str(), path);
}

TensorDict parse_tensor_dict(const std::string& bytes, const std::string& path) {
  const ReadAt read = [&](uint64_t pos, size_t n, std::string* out) {
    if (pos > bytes.size() || n > bytes.size() - pos) return false;
    *out = bytes.substr(pos, n);
    return true;
  };
  const ArchiveIndex index = check_archive(read, bytes.size(), path, "data.pkl");
  const auto [offset, size] = index.records.at("data.pkl");
  std::string pickle;
  read(offset, size, &pickle);
  return TensorDictUnpickler(std::move(pickle), index, read, [&](const std::string& why) {
           throw Error("'" + path + "' is not a readable tensor file (torch.save format): " + why);
         }).run();
}

// ---- safetensors ---------------------------------------------------------------------------

namespace {

struct SafetensorsType {
  const char* name;
  torch::ScalarType type;
};
const SafetensorsType kSafetensorsTypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

bool little_endian() {
  const uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

void write_safetensors(const std::string& path, const TensorDict& tensors, const TensorMetadata& metadata) {
  if (!little_endian()) throw Error("write_safetensors: the format is little-endian and this machine is not");
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name)) throw Error("write_safetensors '" + path + "': duplicate or reserved name '" + name + "'");
    const SafetensorsType* type = nullptr;
    for (const auto& k : kSafetensorsTypes)
      if (k.type == t.scalar_type()) type = &k;
    if (!type) throw Error("write_safetensors '" + path + "': tensor '" + name + "' has a dtype safetensors has no name for");
    torch::Tensor c = t.detach().cpu().contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", type->name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the buffer starts 8-byte aligned
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  out += text;
  out.reserve(out.size() + offset);
  for (const auto& c : data) out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size());
  write_file_atomic(path, out);
}

TensorDict read_safetensors(const std::string& path, TensorMetadata* metadata) {
  return parse_safetensors(read_whole_file(path), path, metadata);
}

TensorDict parse_safetensors(const std::string& bytes, const std::string& path, TensorMetadata* metadata) {
  const std::string where = "'" + path + "' is not a readable safetensors file: ";
  auto fail = [&](const std::string& why) -> void { throw Error(where + why); };
  if (!little_endian()) fail("the format is little-endian and this machine is not");
  if (bytes.size() < 8) fail("shorter than its 8-byte header length");
  const uint64_t n = le(bytes, 0, 8);
  if (n < 2 || n > bytes.size() - 8 || n > (100u << 20)) fail("header length " + std::to_string(n) + " does not fit the file of " + std::to_string(bytes.size()) + " bytes");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const std::exception& e) {
    fail(std::string("its header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail("its header is not a JSON object");
  const uint64_t buffer_start = 8 + n, buffer_size = bytes.size() - buffer_start;
  struct Entry {
    std::string name;
    torch::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, spec] : header.items()) {
    if (name == "__metadata__") {
      if (!spec.is_object()) fail("__metadata__ is not an object of strings");
      for (const auto& [k, v] : spec.items()) {
        if (!v.is_string()) fail("__metadata__/" + k + " is not a string");
        if (metadata) (*metadata)[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string at = "tensor '" + name + "': ";
    if (!spec.is_object() || !spec.contains("dtype") || !spec.contains("shape") || !spec.contains("data_offsets"))
      fail(at + "expected {\"dtype\", \"shape\", \"data_offsets\"}");
    if (!spec["dtype"].is_string()) fail(at + "dtype is not a string");
    const std::string dtype = spec["dtype"].get<std::string>();
    const SafetensorsType* type = nullptr;
    for (const auto& k : kSafetensorsTypes)
      if (dtype == k.name) type = &k;
    if (!type) fail(at + "unsupported dtype \"" + dtype + "\"");
    Entry e{name, type->type, {}, 0, 0};
    if (!spec["shape"].is_array()) fail(at + "shape is not an array");
    uint64_t numel = 1;
    for (const auto& d : spec["shape"]) {
      if (!d.is_number_unsigned()) fail(at + "shape holds " + d.dump() + ", not a size");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 40) || (v > 0 && numel > (uint64_t{1} << 40) / v)) fail(at + "shape is too large");
      numel *= v;
      e.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = spec["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(at + "data_offsets is not [begin, end]");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.begin > e.end || e.end > buffer_size)
      fail(at + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] lie outside the " +
           std::to_string(buffer_size) + "-byte buffer");
    const uint64_t expected = numel * static_cast<uint64_t>(c10::elementSize(e.type));
    if (e.end - e.begin != expected)
      fail(at + "holds " + std::to_string(e.end - e.begin) + " bytes but its shape and dtype need " + std::to_string(expected));
    entries.push_back(std::move(e));
  }
  // The ranges must tile the buffer: no overlaps, no gaps, nothing after the last.
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t covered = 0;
  for (const Entry* e : by_offset) {
    if (e->begin != covered) fail("tensor '" + e->name + "' starts at byte " + std::to_string(e->begin) + ", not at " + std::to_string(covered) + " (overlap or gap)");
    covered = e->end;
  }
  if (covered != buffer_size) fail("its buffer has " + std::to_string(buffer_size - covered) + " bytes no tensor describes");
  TensorDict out;  // in buffer order: the order they were written in
  for (const Entry* e : by_offset) {
    torch::Tensor t = torch::empty(e->shape, torch::TensorOptions().dtype(e->type));
    if (e->end > e->begin) std::memcpy(t.data_ptr(), bytes.data() + buffer_start + e->begin, e->end - e->begin);
    if (e->type == torch::kBool && t.numel() > 0 && (t.view(torch::kUInt8) > 1).any().item<bool>())
      fail("tensor '" + e->name + "' holds bool bytes other than 0 and 1");
    out.emplace_back(e->name, t);
  }
  return out;
}

TensorDict read_weights_file(const std::string& path) {
  const std::string bytes = read_whole_file(path);
  if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] == 'K') return parse_tensor_dict(bytes, path);
  return parse_safetensors(bytes, path);
}

}  // namespace flowkit::io
