// The crystal data model: linear algebra, lattice conventions, element data, the CIF
// reader/writer, the CDVAE CSV loader and Batch conversion.
#include "crysbfn/crystal.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "flowkit/error.h"

namespace crysbfn {

static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
static constexpr double kDeg = M_PI / 180.0;

#include "elements.inc"

// ---- linear algebra ---------------------------------------------------------------------

double det(const Mat3& m) {
  return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
         m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
}

Mat3 inverse(const Mat3& m) {
  const double d = det(m);
  if (!(std::abs(d) > 1e-300) || !std::isfinite(d)) throw std::runtime_error("singular 3x3 matrix");
  Mat3 r;
  r[0][0] = (m[1][1] * m[2][2] - m[1][2] * m[2][1]) / d;
  r[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / d;
  r[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / d;
  r[1][0] = (m[1][2] * m[2][0] - m[1][0] * m[2][2]) / d;
  r[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / d;
  r[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / d;
  r[2][0] = (m[1][0] * m[2][1] - m[1][1] * m[2][0]) / d;
  r[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / d;
  r[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / d;
  return r;
}

Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 r{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) r[i][j] += a[i][k] * b[k][j];
  return r;
}

Mat3 transpose(const Mat3& m) {
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) r[i][j] = m[j][i];
  return r;
}

Vec3 row_times(const Vec3& v, const Mat3& m) {
  Vec3 r{};
  for (int j = 0; j < 3; ++j) r[j] = v[0] * m[0][j] + v[1] * m[1][j] + v[2] * m[2][j];
  return r;
}

double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }

// ---- lattice ----------------------------------------------------------------------------

Mat3 lattice_from_parameters(double a, double b, double c, double alpha, double beta, double gamma) {
  const double ca = std::cos(alpha * kDeg), cb = std::cos(beta * kDeg), cg = std::cos(gamma * kDeg);
  const double sa = std::sin(alpha * kDeg), sb = std::sin(beta * kDeg);
  double val = (ca * cb - cg) / (sa * sb);
  val = std::clamp(val, -1.0, 1.0);  // pymatgen abs_cap
  const double gamma_star = std::acos(val);
  Mat3 m;
  m[0] = {a * sb, 0.0, a * cb};
  m[1] = {-b * sa * std::cos(gamma_star), b * sa * std::sin(gamma_star), b * ca};
  m[2] = {0.0, 0.0, c};
  return m;
}

std::array<double, 6> lattice_parameters(const Mat3& l) {
  const double a = norm(l[0]), b = norm(l[1]), c = norm(l[2]);
  auto angle = [](const Vec3& u, const Vec3& v, double lu, double lv) {
    return std::acos(std::clamp(dot(u, v) / (lu * lv), -1.0, 1.0)) / kDeg;
  };
  return {a, b, c, angle(l[1], l[2], b, c), angle(l[0], l[2], a, c), angle(l[0], l[1], a, b)};
}

double volume(const Mat3& l) { return std::abs(det(l)); }

Vec3 reciprocal_lengths(const Mat3& l) {
  Mat3 inv = inverse(l);  // columns of inv = reciprocal vectors / (2 pi)
  Vec3 r;
  for (int k = 0; k < 3; ++k) r[k] = std::sqrt(inv[0][k] * inv[0][k] + inv[1][k] * inv[1][k] + inv[2][k] * inv[2][k]);
  return r;
}

// ---- elements ---------------------------------------------------------------------------

int atomic_number(const std::string& symbol) {
  if (symbol.empty() || symbol.size() > 3) return 0;
  std::string s = symbol;
  s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  for (size_t i = 1; i < s.size(); ++i) s[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
  const auto& rows = element_rows();
  for (size_t i = 0; i < rows.size(); ++i)
    if (s == rows[i].symbol) return static_cast<int>(i + 1);
  return 0;
}

std::string element_symbol(int z) { return (z >= 1 && z <= kMaxZ) ? element_rows()[z - 1].symbol : ""; }
double atomic_mass(int z) { return (z >= 1 && z <= kMaxZ) ? element_rows()[z - 1].mass : kNaN; }
double pauling_electronegativity(int z) { return (z >= 1 && z <= kMaxZ) ? element_rows()[z - 1].eneg : kNaN; }
const std::vector<int>& oxidation_states(int z) {
  static const std::vector<int> none;
  return (z >= 1 && z <= kMaxZ) ? element_rows()[z - 1].ox : none;
}
bool is_smact_metal(int z) { return z >= 1 && z <= kMaxZ && element_rows()[z - 1].metal; }

// ---- crystal ----------------------------------------------------------------------------

static std::vector<std::pair<int, int>> counts_in_order(const std::vector<int>& z) {
  std::vector<std::pair<int, int>> out;
  for (int e : z) {
    auto it = std::find_if(out.begin(), out.end(), [e](const auto& p) { return p.first == e; });
    if (it == out.end()) out.emplace_back(e, 1);
    else ++it->second;
  }
  return out;
}

static std::string symbol_or_x(int z) {
  std::string s = element_symbol(z);
  return s.empty() ? "X" : s;
}

std::string Crystal::formula() const {
  std::string s;
  for (const auto& [e, n] : counts_in_order(z)) s += symbol_or_x(e) + (n > 1 ? std::to_string(n) : "");
  return s;
}

std::string Crystal::formula_sum() const {
  std::string s;
  for (const auto& [e, n] : counts_in_order(z)) s += (s.empty() ? "" : " ") + symbol_or_x(e) + std::to_string(n);
  return s;
}

// ---- CIF tokenizer and parser -----------------------------------------------------------

namespace {

struct Token {
  std::string text;
  bool quoted = false;
  int line = 0;
};

std::vector<Token> tokenize_cif(const std::string& text) {
  std::vector<Token> out;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line[0] == ';') {  // text field up to the next line starting with ';'
      Token t{line.substr(1), true, lineno};
      bool closed = false;
      while (std::getline(in, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty() && line[0] == ';') {
          closed = true;
          break;
        }
        t.text += "\n" + line;
      }
      if (!closed) throw CifError("cif", "unterminated ';' text field starting at line " + std::to_string(t.line));
      out.push_back(std::move(t));
      continue;
    }
    size_t i = 0;
    const size_t n = line.size();
    while (i < n) {
      while (i < n && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
      if (i >= n) break;
      if (line[i] == '#') break;  // comment to end of line
      if (line[i] == '\'' || line[i] == '"') {
        const char q = line[i];
        size_t j = i + 1;
        // CIF 1.1: a quote closes the value only when followed by whitespace or the end of line.
        while (j < n && !(line[j] == q && (j + 1 == n || std::isspace(static_cast<unsigned char>(line[j + 1]))))) ++j;
        if (j >= n) throw CifError("cif", "unterminated quoted value at line " + std::to_string(lineno));
        out.push_back({line.substr(i + 1, j - i - 1), true, lineno});
        i = j + 1;
        continue;
      }
      size_t j = i;
      while (j < n && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
      out.push_back({line.substr(i, j - i), false, lineno});
      i = j;
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

struct CifLoop {
  std::vector<std::string> tags;  // lower case
  std::vector<std::vector<std::string>> rows;
  int column(const std::string& tag) const {
    for (size_t i = 0; i < tags.size(); ++i)
      if (tags[i] == tag) return static_cast<int>(i);
    return -1;
  }
};

struct CifBlock {
  std::string name;
  std::map<std::string, std::string> items;  // lower-case tag -> value
  std::vector<CifLoop> loops;
};

bool is_keyword(const Token& t) {
  if (t.quoted) return false;
  std::string l = lower(t.text);
  return starts_with(l, "data_") || l == "loop_" || starts_with(l, "save_") || l == "global_" || l == "stop_";
}

std::vector<CifBlock> parse_blocks(const std::string& text) {
  std::vector<Token> tokens = tokenize_cif(text);
  std::vector<CifBlock> blocks;
  size_t i = 0;
  auto need_block = [&](const Token& t) {
    if (blocks.empty())
      throw CifError("cif", "'" + t.text + "' at line " + std::to_string(t.line) + " comes before any data_ block");
  };
  while (i < tokens.size()) {
    const Token& t = tokens[i];
    std::string l = lower(t.text);
    if (!t.quoted && starts_with(l, "data_")) {
      blocks.push_back({t.text.substr(5), {}, {}});
      ++i;
    } else if (!t.quoted && l == "loop_") {
      need_block(t);
      ++i;
      CifLoop loop;
      while (i < tokens.size() && !tokens[i].quoted && tokens[i].text[0] == '_') loop.tags.push_back(lower(tokens[i++].text));
      if (loop.tags.empty()) throw CifError("cif", "loop_ without tags at line " + std::to_string(t.line));
      std::vector<std::string> values;
      while (i < tokens.size() && !is_keyword(tokens[i]) && !(tokens[i].text[0] == '_' && !tokens[i].quoted))
        values.push_back(tokens[i++].text);
      if (values.size() % loop.tags.size() != 0)
        throw CifError(loop.tags[0], "loop at line " + std::to_string(t.line) + " has " + std::to_string(values.size()) +
                                         " values, not a multiple of its " + std::to_string(loop.tags.size()) + " tags");
      for (size_t r = 0; r < values.size(); r += loop.tags.size())
        loop.rows.emplace_back(values.begin() + static_cast<long>(r), values.begin() + static_cast<long>(r + loop.tags.size()));
      blocks.back().loops.push_back(std::move(loop));
    } else if (!t.quoted && t.text[0] == '_') {
      need_block(t);
      if (i + 1 >= tokens.size() || is_keyword(tokens[i + 1]) || (!tokens[i + 1].quoted && tokens[i + 1].text[0] == '_'))
        throw CifError(lower(t.text), "no value (line " + std::to_string(t.line) + ")");
      blocks.back().items[lower(t.text)] = tokens[i + 1].text;
      i += 2;
    } else if (!t.quoted && (starts_with(l, "save_") || l == "global_")) {
      ++i;  // frames are not used by these files; ignore the keyword
    } else {
      throw CifError("cif", "unexpected value '" + t.text + "' at line " + std::to_string(t.line));
    }
  }
  return blocks;
}

// "4.0563(2)" -> 4.0563; throws CifError(tag) when not a number.
double parse_number(const std::string& tag, const std::string& raw) {
  std::string s = raw;
  size_t p = s.find('(');
  if (p != std::string::npos && s.back() == ')') s = s.substr(0, p);
  if (s.empty() || s == "?" || s == ".") throw CifError(tag, "value is unknown ('" + raw + "')");
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !std::isfinite(v)) throw CifError(tag, "cannot parse '" + raw + "' as a number");
  return v;
}

// Element symbol at the start of a type symbol or label: "Fe2+" -> "Fe", "O4" -> "O".
std::string leading_symbol(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (!std::isalpha(static_cast<unsigned char>(c))) break;
    if (out.size() == 1 && std::isupper(static_cast<unsigned char>(c))) break;
    if (out.size() >= 2) break;
    out += c;
  }
  // Two-letter candidates that are not elements fall back to one letter ("OH" label -> "O").
  if (out.size() == 2 && atomic_number(out) == 0 && atomic_number(out.substr(0, 1)) != 0) out = out.substr(0, 1);
  return out;
}

struct SymOp {
  double r[3][3] = {};
  double t[3] = {};
};

double symop_number(const std::string& tag, const std::string& raw, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v) || std::abs(v) > 1e6)
    throw CifError(tag, "bad number '" + text + "' in symmetry operation '" + raw + "'");
  return v;
}

SymOp parse_symop(const std::string& tag, const std::string& raw) {
  SymOp op;
  std::string s;
  for (char c : raw)
    if (!std::isspace(static_cast<unsigned char>(c))) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == ',') parts.push_back(cur), cur.clear();
    else cur += c;
  }
  parts.push_back(cur);
  if (parts.size() != 3) throw CifError(tag, "symmetry operation '" + raw + "' does not have 3 components");
  for (int k = 0; k < 3; ++k) {
    const std::string& e = parts[k];
    size_t i = 0;
    if (e.empty()) throw CifError(tag, "empty component in symmetry operation '" + raw + "'");
    while (i < e.size()) {
      double sign = 1;
      if (e[i] == '+' || e[i] == '-') sign = e[i++] == '-' ? -1 : 1;
      double coef = 1;
      bool has_number = false;
      if (i < e.size() && (std::isdigit(static_cast<unsigned char>(e[i])) || e[i] == '.')) {
        size_t j = i;
        while (j < e.size() && (std::isdigit(static_cast<unsigned char>(e[j])) || e[j] == '.')) ++j;
        coef = symop_number(tag, raw, e.substr(i, j - i));
        i = j;
        if (i < e.size() && e[i] == '/') {
          size_t j2 = ++i;
          while (j2 < e.size() && std::isdigit(static_cast<unsigned char>(e[j2]))) ++j2;
          if (j2 == i) throw CifError(tag, "bad fraction in symmetry operation '" + raw + "'");
          const double denominator = symop_number(tag, raw, e.substr(i, j2 - i));
          if (!(denominator > 0)) throw CifError(tag, "zero denominator in symmetry operation '" + raw + "'");
          coef /= denominator;
          i = j2;
        }
        has_number = true;
        if (i < e.size() && e[i] == '*') ++i;
      }
      if (i < e.size() && (e[i] == 'x' || e[i] == 'y' || e[i] == 'z')) {
        op.r[k][e[i] - 'x'] += sign * coef;
        ++i;
      } else if (has_number) {
        op.t[k] += sign * coef;
      } else {
        throw CifError(tag, "cannot parse symmetry operation '" + raw + "'");
      }
    }
  }
  return op;
}

double wrap01(double f) {
  double w = f - std::floor(f);
  return w >= 1.0 ? 0.0 : w;
}

// ---- site order of pymatgen's CifParser --------------------------------------------------
// pymatgen's Element.X (pymatgen/core/periodic_table.json, Pauling scale) for Z = 1..103, NaN
// for He, Ne, Ar. Used only to put the sites in pymatgen's order; it is not SMACT's table
// (pauling_electronegativity, used by the validity metric), which differs for some elements
// (SMACT's Zr = 0.33, pymatgen's 1.33).
static const double kPymatgenX[kMaxZ] = {
    2.2, kNaN, 0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, kNaN, 0.93, 1.31, 1.61, 1.9, 2.19, 2.58, 3.16,
    kNaN, 0.82, 1.0, 1.36, 1.54, 1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.9, 1.65, 1.81, 2.01, 2.18, 2.55,
    2.96, 3.0, 0.82, 0.95, 1.22, 1.33, 1.6, 2.16, 1.9, 2.2, 2.28, 2.2, 1.93, 1.69, 1.78, 1.96, 2.05,
    2.1, 2.66, 2.6, 0.79, 0.89, 1.1, 1.12, 1.13, 1.14, 1.13, 1.17, 1.2, 1.2, 1.1, 1.22, 1.23, 1.24,
    1.25, 1.1, 1.27, 1.3, 1.5, 2.36, 1.9, 2.2, 2.2, 2.28, 2.54, 2.0, 1.62, 2.33, 2.02, 2.0, 2.2, 2.2,
    0.7, 0.9, 1.1, 1.3, 1.5, 1.38, 1.36, 1.28, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3
};

double pymatgen_x(int z) { return kPymatgenX[z - 1]; }

// The order in which pymatgen's CifParser (Structure.from_str(..., fmt="cif")) returns the
// sites, which matters downstream: StructureMatcher.get_rms_dist anchors its translations on
// the first site of the reference's rarest species, so near stol its verdict depends on the
// site order (5 of the 376 perov-5 polymorph pairs flip between file order and this order).
// CifParser._get_structure groups the sites by species in Composition order (for single
// elements: descending Element order, i.e. X with NaN as +inf, ties by symbol); each group
// keeps the read order (rows, then symmetry images). Structure.get_sorted_structure() then
// sorts with Site.__lt__: average electronegativity ascending, ties (and NaN) by symbol.
// Stable either way, so sites of one element always keep the read order. With He, Ne or Ar
// Site.__lt__ is not a strict weak order and the result is whatever CPython's list.sort
// makes of it: reproduced exactly below for fewer than 64 sites (CPython's count_run plus
// binary insertion). Above that CPython merges runs; the same insertion is used (well defined
// for any comparator, unlike std::stable_sort's contract), exact whenever no noble gas is present.
void order_sites_as_pymatgen(Crystal& c) {
  const size_t n = c.size();
  if (n < 2) return;
  std::vector<size_t> s(n);
  std::iota(s.begin(), s.end(), size_t{0});
  auto element_less = [&](int a, int b) {  // pymatgen Element.__lt__
    const double xa = std::isnan(pymatgen_x(a)) ? std::numeric_limits<double>::infinity() : pymatgen_x(a);
    const double xb = std::isnan(pymatgen_x(b)) ? std::numeric_limits<double>::infinity() : pymatgen_x(b);
    if (xa != xb) return xa < xb;
    return element_symbol(a) < element_symbol(b);
  };
  std::stable_sort(s.begin(), s.end(), [&](size_t a, size_t b) { return element_less(c.z[b], c.z[a]); });
  auto site_less = [&](size_t a, size_t b) {  // pymatgen Site.__lt__ (NaN compares false)
    const double xa = pymatgen_x(c.z[a]), xb = pymatgen_x(c.z[b]);
    if (xa < xb) return true;
    if (xa > xb) return false;
    return element_symbol(c.z[a]) < element_symbol(c.z[b]);
  };
  {
    // CPython listsort for n < minrun: the leading run (reversed when strictly descending),
    // then binary insertion of the rest.
    size_t run = 2;
    if (site_less(s[1], s[0])) {
      while (run < n && site_less(s[run], s[run - 1])) ++run;
      std::reverse(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(run));
    } else {
      while (run < n && !site_less(s[run], s[run - 1])) ++run;
    }
    for (size_t start = run; start < n; ++start) {
      const size_t pivot = s[start];
      size_t l = 0, r = start;
      while (l < r) {
        const size_t p = l + ((r - l) >> 1);
        if (site_less(pivot, s[p])) r = p;
        else l = p + 1;
      }
      for (size_t k = start; k > l; --k) s[k] = s[k - 1];
      s[l] = pivot;
    }
  }
  std::vector<Vec3> frac(n);
  std::vector<int> z(n);
  for (size_t i = 0; i < n; ++i) frac[i] = c.frac[s[i]], z[i] = c.z[s[i]];
  c.frac.swap(frac);
  c.z.swap(z);
}

Crystal block_to_crystal(const CifBlock& b) {
  auto scalar = [&](const std::string& tag) -> double {
    auto it = b.items.find(tag);
    if (it == b.items.end()) throw CifError(tag, "missing");
    return parse_number(tag, it->second);
  };
  const char* length_tags[3] = {"_cell_length_a", "_cell_length_b", "_cell_length_c"};
  const char* angle_tags[3] = {"_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"};
  double p[6];
  for (int k = 0; k < 3; ++k) {
    p[k] = scalar(length_tags[k]);
    if (!(p[k] > 0)) throw CifError(length_tags[k], "cell length must be positive");
  }
  for (int k = 0; k < 3; ++k) {
    p[3 + k] = scalar(angle_tags[k]);
    if (!(p[3 + k] > 0 && p[3 + k] < 180)) throw CifError(angle_tags[k], "cell angle must lie in (0, 180) degrees");
  }
  Crystal c;
  c.id = b.name;
  c.lattice = lattice_from_parameters(p[0], p[1], p[2], p[3], p[4], p[5]);
  if (!(volume(c.lattice) > 0)) throw CifError("_cell_angle_alpha", "the cell angles give a cell of zero volume");

  const CifLoop* sites = nullptr;
  for (const auto& l : b.loops)
    if (l.column("_atom_site_fract_x") >= 0) sites = &l;
  if (!sites) throw CifError("_atom_site_fract_x", "no atom_site loop with fractional coordinates");
  const int cx = sites->column("_atom_site_fract_x"), cy = sites->column("_atom_site_fract_y"),
            cz = sites->column("_atom_site_fract_z");
  if (cy < 0) throw CifError("_atom_site_fract_y", "missing from the atom_site loop");
  if (cz < 0) throw CifError("_atom_site_fract_z", "missing from the atom_site loop");
  int csym = sites->column("_atom_site_type_symbol");
  std::string sym_tag = "_atom_site_type_symbol";
  if (csym < 0) csym = sites->column("_atom_site_label"), sym_tag = "_atom_site_label";
  if (csym < 0) throw CifError("_atom_site_type_symbol", "missing (and no _atom_site_label)");
  const int cocc = sites->column("_atom_site_occupancy");

  std::vector<SymOp> ops;
  for (const char* tag : {"_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"}) {
    for (const auto& l : b.loops) {
      int col = l.column(tag);
      if (col < 0) continue;
      for (const auto& row : l.rows) ops.push_back(parse_symop(tag, row[col]));
    }
    auto it = b.items.find(tag);
    if (it != b.items.end()) ops.push_back(parse_symop(tag, it->second));
    if (!ops.empty()) break;
  }
  if (ops.empty()) ops.push_back(parse_symop("_symmetry_equiv_pos_as_xyz", "x,y,z"));

  for (size_t r = 0; r < sites->rows.size(); ++r) {
    const auto& row = sites->rows[r];
    const std::string where = " (atom_site row " + std::to_string(r + 1) + ")";
    std::string symbol = leading_symbol(row[csym]);
    int z = atomic_number(symbol);
    if (z == 0) throw CifError(sym_tag, "unknown element '" + row[csym] + "'" + where);
    if (cocc >= 0) {
      double occ = parse_number("_atom_site_occupancy", row[cocc]);
      if (std::abs(occ - 1.0) > 1e-3)
        throw CifError("_atom_site_occupancy", "partial occupancy " + row[cocc] + " is not supported" + where);
    }
    Vec3 f;
    try {
      f = {parse_number("_atom_site_fract_x", row[cx]), parse_number("_atom_site_fract_y", row[cy]),
           parse_number("_atom_site_fract_z", row[cz])};
    } catch (const CifError& e) {
      throw CifError(e.field(), std::string(e.what()).substr(e.field().size() + 2) + where);
    }
    // CifParser._sanitize_data: a coordinate within 1e-4 (relative) of 1/3 or 2/3 as written
    // (before wrapping and symmetry) is taken to be that third; -0.3333 is left alone.
    for (double& v : f)
      for (double third : {1.0 / 3.0, 2.0 / 3.0})
        if (std::abs(1 - v / third) < 1e-4) v = third;
    for (const SymOp& op : ops) {
      Vec3 g;
      for (int k = 0; k < 3; ++k) g[k] = wrap01(op.r[k][0] * f[0] + op.r[k][1] * f[1] + op.r[k][2] * f[2] + op.t[k]);
      bool duplicate = false;
      for (size_t s = 0; s < c.frac.size() && !duplicate; ++s) {
        if (c.z[s] != z) continue;
        bool same = true;
        for (int k = 0; k < 3; ++k) {
          double d = g[k] - c.frac[s][k];
          if (std::abs(d - std::round(d)) > 1e-4) same = false;
        }
        duplicate = same;
      }
      if (!duplicate) {
        c.frac.push_back(g);
        c.z.push_back(z);
      }
    }
  }
  if (c.z.empty()) throw CifError("_atom_site_fract_x", "the atom_site loop has no rows");
  order_sites_as_pymatgen(c);  // as CifParser returns them (get_sorted_structure)
  return c;
}

}  // namespace

std::vector<Crystal> parse_cif(const std::string& text) {
  std::vector<CifBlock> blocks = parse_blocks(text);
  if (blocks.empty()) throw CifError("cif", "no data_ block");
  std::vector<Crystal> out;
  for (const auto& b : blocks) out.push_back(block_to_crystal(b));
  return out;
}

std::string write_cif_block(const Crystal& c, const std::string& block) {
  auto p = c.parameters();
  std::string formula = c.formula();
  char buf[256];
  std::string s = "# generated using flowkit crysbfn\n";
  std::string name = block.empty() ? formula : block;
  for (char& ch : name)
    if (std::isspace(static_cast<unsigned char>(ch))) ch = '_';
  s += "data_" + name + "\n";
  s += "_symmetry_space_group_name_H-M   'P 1'\n";
  const char* tags[6] = {"_cell_length_a", "_cell_length_b", "_cell_length_c",
                         "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"};
  for (int k = 0; k < 6; ++k) {
    std::snprintf(buf, sizeof buf, "%s   %.8f\n", tags[k], p[k]);
    s += buf;
  }
  s += "_symmetry_Int_Tables_number   1\n";
  s += "_chemical_formula_structural   " + formula + "\n";
  s += "_chemical_formula_sum   '" + c.formula_sum() + "'\n";
  std::snprintf(buf, sizeof buf, "_cell_volume   %.8f\n", c.volume());
  s += buf;
  s += "_cell_formula_units_Z   1\n";
  s += "loop_\n _symmetry_equiv_pos_site_id\n _symmetry_equiv_pos_as_xyz\n  1  'x, y, z'\n";
  s += "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_symmetry_multiplicity\n"
       " _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n";
  for (size_t i = 0; i < c.size(); ++i) {
    std::string sym = symbol_or_x(c.z[i]);
    std::snprintf(buf, sizeof buf, "  %s  %s%zu  1  %.8f  %.8f  %.8f  1\n", sym.c_str(), sym.c_str(), i, c.frac[i][0],
                  c.frac[i][1], c.frac[i][2]);
    s += buf;
  }
  return s;
}

// ---- CSV --------------------------------------------------------------------------------

static std::string read_maybe_gzip(const std::string& file) {
  gzFile gz = gzopen(file.c_str(), "rb");  // reads plain files transparently
  if (!gz) throw flowkit::Error("cannot open '" + file + "'");
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(gz, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int errnum = 0;
  const char* msg = gzerror(gz, &errnum);
  std::string error = (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) ? std::string(msg ? msg : "read error") : "";
  gzclose(gz);
  if (!error.empty()) throw flowkit::Error("reading '" + file + "' failed: " + error);
  return out;
}

namespace {
struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // first line of the record
};

std::vector<CsvRecord> parse_csv(const std::string& text) {
  std::vector<CsvRecord> out;
  CsvRecord rec;
  std::string field;
  bool in_quotes = false, field_started = false;
  int64_t line = 1;
  rec.line = 1;
  auto end_field = [&] {
    rec.fields.push_back(std::move(field));
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    if (!(rec.fields.size() == 1 && rec.fields[0].empty())) out.push_back(std::move(rec));
    rec = CsvRecord{};
    rec.line = line;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_quotes) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
        else in_quotes = false;
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"' && !field_started) {
      in_quotes = field_started = true;
    } else if (ch == ',') {
      end_field();
    } else if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      continue;
    } else if (ch == '\n') {
      ++line;
      end_record();
    } else {
      field += ch;
      field_started = true;
    }
  }
  if (in_quotes) throw flowkit::Error("unterminated quoted field in the record starting at line " + std::to_string(rec.line));
  if (!field.empty() || !rec.fields.empty()) end_record();
  return out;
}
}  // namespace

CsvLoadResult load_cdvae_csv(const std::string& file, bool skip_bad_rows) {
  return parse_cdvae_csv(read_maybe_gzip(file), file, skip_bad_rows);
}

CsvLoadResult parse_cdvae_csv(const std::string& text, const std::string& file, bool skip_bad_rows) {
  std::vector<CsvRecord> records;
  try {
    records = parse_csv(text);
  } catch (const flowkit::Error& e) {
    throw flowkit::Error("'" + file + "': " + e.what());
  }
  if (records.empty()) throw flowkit::Error("'" + file + "' is empty");
  const auto& header = records[0].fields;
  int cif_col = -1, id_col = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "cif") cif_col = static_cast<int>(i);
    if (header[i] == "material_id") id_col = static_cast<int>(i);
  }
  if (cif_col < 0) throw flowkit::Error("'" + file + "': no 'cif' column in the header");
  CsvLoadResult result;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    ++result.rows;
    std::string id = (id_col >= 0 && id_col < static_cast<int>(rec.fields.size())) ? rec.fields[id_col] : "";
    std::string where = "'" + file + "' row " + std::to_string(r) + " (line " + std::to_string(rec.line) +
                        (id.empty() ? "" : ", material_id " + id) + ")";
    try {
      if (cif_col >= static_cast<int>(rec.fields.size()))
        throw CifError("cif", "the row has " + std::to_string(rec.fields.size()) + " fields, the header " +
                                  std::to_string(header.size()));
      std::vector<Crystal> cs = parse_cif(rec.fields[cif_col]);
      if (cs.size() != 1) throw CifError("cif", "expected one data block, found " + std::to_string(cs.size()));
      cs[0].id = id.empty() ? cs[0].id : id;
      result.crystals.push_back(std::move(cs[0]));
    } catch (const CifError& e) {
      std::string msg = where + ": field " + e.what();
      if (!skip_bad_rows) throw flowkit::Error(msg + " (set skip_bad_rows to skip malformed rows)");
      ++result.skipped;
      if (result.errors.size() < 20) result.errors.push_back(msg);
    }
  }
  return result;
}

// ---- batches ----------------------------------------------------------------------------

flowkit::Batch to_batch(const std::vector<Crystal>& crystals, const torch::Device& device) {
  const int64_t B = static_cast<int64_t>(crystals.size());
  int64_t A = 0;
  for (const auto& c : crystals) A += static_cast<int64_t>(c.size());
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  torch::Tensor lattice = torch::empty({B, 3, 3}, f32), x = torch::empty({B, 6}, f32);
  torch::Tensor frac = torch::empty({A, 3}, f32);
  torch::Tensor types = torch::empty({A}, torch::kLong), batch = torch::empty({A}, torch::kLong);
  torch::Tensor num = torch::empty({B}, torch::kLong);
  auto L = lattice.accessor<float, 3>();
  auto X = x.accessor<float, 2>();
  auto F = frac.accessor<float, 2>();
  auto T = types.accessor<int64_t, 1>();
  auto I = batch.accessor<int64_t, 1>();
  auto N = num.accessor<int64_t, 1>();
  int64_t a = 0;
  for (int64_t b = 0; b < B; ++b) {
    const Crystal& c = crystals[b];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) L[b][i][j] = static_cast<float>(c.lattice[i][j]);
    auto p = c.parameters();
    for (int k = 0; k < 6; ++k) X[b][k] = static_cast<float>(p[k]);
    N[b] = static_cast<int64_t>(c.size());
    for (size_t i = 0; i < c.size(); ++i, ++a) {
      for (int k = 0; k < 3; ++k) F[a][k] = static_cast<float>(c.frac[i][k]);
      T[a] = c.z[i];
      I[a] = b;
    }
  }
  flowkit::Batch out;
  out.set("lattice", lattice.to(device));
  out.set("x", x.to(device));
  out.set("frac", frac.to(device));
  out.set("types", types.to(device));
  out.set("num_atoms", num.to(device));
  out.set("batch", batch.to(device));
  return out;
}

std::vector<Crystal> from_batch(const flowkit::Batch& batch) {
  torch::Tensor num = batch.at("num_atoms").detach().to(torch::kCPU, torch::kLong).reshape({-1}).contiguous();
  torch::Tensor frac = batch.at("frac").detach().to(torch::kCPU, torch::kDouble).contiguous();
  torch::Tensor types = batch.at("types").detach().to(torch::kCPU, torch::kLong).reshape({-1}).contiguous();
  const int64_t B = num.size(0);
  if (frac.dim() != 2 || frac.size(1) != 3) throw flowkit::Error("crystal batch: 'frac' must be [atoms, 3]");
  if (num.sum().item<int64_t>() != frac.size(0) || types.size(0) != frac.size(0))
    throw flowkit::Error("crystal batch: num_atoms sums to " + std::to_string(num.sum().item<int64_t>()) + " but 'frac' has " +
                         std::to_string(frac.size(0)) + " rows and 'types' " + std::to_string(types.size(0)));
  torch::Tensor lat;
  bool from_params = false;
  if (batch.has("lattice")) {
    lat = batch.at("lattice").detach().to(torch::kCPU, torch::kDouble).reshape({-1, 3, 3}).contiguous();
  } else {
    lat = batch.at("x").detach().to(torch::kCPU, torch::kDouble).reshape({-1, 6}).contiguous();
    from_params = true;
  }
  if (lat.size(0) != B)
    throw flowkit::Error("crystal batch: " + std::to_string(lat.size(0)) + " lattices for " + std::to_string(B) + " crystals");
  auto Nn = num.accessor<int64_t, 1>();
  auto F = frac.accessor<double, 2>();
  auto T = types.accessor<int64_t, 1>();
  std::vector<Crystal> out(static_cast<size_t>(B));
  int64_t a = 0;
  for (int64_t b = 0; b < B; ++b) {
    Crystal& c = out[b];
    if (from_params) {
      auto P = lat.accessor<double, 2>();
      c.lattice = lattice_from_parameters(P[b][0], P[b][1], P[b][2], P[b][3], P[b][4], P[b][5]);
      for (int k = 0; k < 3; ++k)
        if (!(P[b][k] > 0)) c.lattice[k] = {0.0, 0.0, 0.0};  // CDVAE: non-positive length -> invalid
    } else {
      auto M = lat.accessor<double, 3>();
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) c.lattice[i][j] = M[b][i][j];
    }
    for (int64_t i = 0; i < Nn[b]; ++i, ++a) {
      c.frac.push_back({F[a][0], F[a][1], F[a][2]});
      c.z.push_back(static_cast<int>(T[a]));
    }
  }
  return out;
}

}  // namespace crysbfn
