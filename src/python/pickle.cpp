// The pickle reader and writer. The reader is a loop over opcodes with an
// explicit stack (no recursion), building a graph of nodes that the memo can
// share (as Python's objects are shared), then copying it into a Value tree
// with an explicit stack too; every length and count is checked against the
// input and the Limits before anything is allocated for it.
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include <retools/detail/python_repr.hpp>
#include <retools/pickle.hpp>

#include "python/pickle_reader.hpp"
#include "python/utf8.hpp"

namespace retools::pickle {
namespace {

using Kind = Value::Kind;
using retools::detail::append_utf8;
using retools::detail::utf8_sequence;
using retools::detail::valid_utf8;

// Longest int we accept: Python 3 itself refuses to read more than 4300
// decimal digits; 2048 bytes of two's complement is about 4930.
constexpr std::size_t max_int_bytes = 2048;
constexpr std::size_t max_int_digits = 4300;

// ---- UTF-8 -----------------------------------------------------------------

// ---- ints --------------------------------------------------------------------

// Little-endian two's complement bytes (LONG1/LONG4) to decimal text.
std::string long_bytes_to_decimal(std::string_view b) {
    std::vector<std::uint8_t> mag(b.begin(), b.end());
    const bool negative = !mag.empty() && (mag.back() & 0x80);
    if (negative) {  // magnitude = two's complement negation
        unsigned carry = 1;
        for (auto& byte : mag) {
            unsigned v = static_cast<std::uint8_t>(~byte) + carry;
            byte = static_cast<std::uint8_t>(v);
            carry = v >> 8;
        }
    }
    while (!mag.empty() && mag.back() == 0) mag.pop_back();
    if (mag.empty()) return "0";
    std::string digits;
    while (!mag.empty()) {  // divide by 10^9, most significant byte first
        std::uint64_t rem = 0;
        for (std::size_t i = mag.size(); i-- > 0;) {
            std::uint64_t cur = (rem << 8) | mag[i];
            mag[i] = static_cast<std::uint8_t>(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        while (!mag.empty() && mag.back() == 0) mag.pop_back();
        for (int k = 0; k < 9 && (!mag.empty() || rem != 0); ++k) {
            digits += static_cast<char>('0' + rem % 10);
            rem /= 10;
        }
    }
    if (negative) digits += '-';
    return std::string(digits.rbegin(), digits.rend());
}

// Decimal text (optional sign) to little-endian two's complement, minimal
// length; false when not a decimal integer.
bool decimal_to_long_bytes(std::string_view text, std::string& out) {
    bool negative = false;
    if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
        negative = text[0] == '-';
        text.remove_prefix(1);
    }
    if (text.empty() || text.size() > max_int_digits) return false;
    std::vector<std::uint8_t> mag;  // little-endian magnitude
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        unsigned carry = static_cast<unsigned>(c - '0');
        for (auto& byte : mag) {
            unsigned v = byte * 10u + carry;
            byte = static_cast<std::uint8_t>(v);
            carry = v >> 8;
        }
        if (carry) mag.push_back(static_cast<std::uint8_t>(carry));
    }
    while (!mag.empty() && mag.back() == 0) mag.pop_back();
    if (mag.empty()) negative = false;  // "-0"
    if (negative) {
        unsigned carry = 1;
        for (auto& byte : mag) {
            unsigned v = static_cast<std::uint8_t>(~byte) + carry;
            byte = static_cast<std::uint8_t>(v);
            carry = v >> 8;
        }
        // Sign extension: the top byte must carry the sign bit (and -2**(8n-1) fits exactly).
        if (mag.empty() || !(mag.back() & 0x80)) mag.push_back(0xff);
        while (mag.size() > 1 && mag.back() == 0xff && (mag[mag.size() - 2] & 0x80)) mag.pop_back();
    } else {
        if (!mag.empty() && (mag.back() & 0x80)) mag.push_back(0);
    }
    out.assign(mag.begin(), mag.end());
    return true;
}

// An int from decimal text: integer when it fits int64, else big_integer.
bool int_from_decimal(std::string_view text, Value& out) {
    std::string_view digits = text;
    if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);
    std::int64_t i = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
    if (ec == std::errc{} && end == digits.data() + digits.size() && !digits.empty()) {
        out = Value::integer(i);
        return true;
    }
    std::string bytes;
    if (!decimal_to_long_bytes(text, bytes)) return false;
    // Normalise: strip leading zeros and '+'.
    out = Value::big_integer(long_bytes_to_decimal(bytes));
    return true;
}

Value int_from_long_bytes(std::string_view b) {
    if (b.size() <= 8) {
        std::uint64_t u = 0;
        for (std::size_t i = b.size(); i-- > 0;) u = (u << 8) | static_cast<std::uint8_t>(b[i]);
        if (!b.empty() && b.size() < 8 && (static_cast<std::uint8_t>(b.back()) & 0x80))
            u |= ~std::uint64_t{0} << (8 * b.size());  // sign-extend
        return Value::integer(static_cast<std::int64_t>(u));
    }
    Value v = Value::big_integer(long_bytes_to_decimal(b));
    std::int64_t i = 0;  // a redundant encoding of a small int
    const std::string& t = v.text();
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), i);
    if (ec == std::errc{} && end == t.data() + t.size()) return Value::integer(i);
    return v;
}

// ---- the reader ----------------------------------------------------------------

// Callables a pickle may name: they only build sets and bytes.
enum class Global : std::uint8_t { none, set, frozenset, bytes, bytearray, codecs_encode };

Global whitelisted(std::string_view module, std::string_view name) {
    if (module == "__builtin__" || module == "builtins") {
        if (name == "set") return Global::set;
        if (name == "frozenset") return Global::frozenset;
        if (name == "bytes") return Global::bytes;
        if (name == "bytearray") return Global::bytearray;
    } else if (module == "_codecs" && name == "encode") {
        return Global::codecs_encode;
    }
    return Global::none;
}

struct Node {
    Kind kind = Kind::none;
    Global global = Global::none;  // a whitelisted callable (kind none)
    std::int64_t i = 0;
    double f = 0;
    std::string text;
    std::vector<std::uint32_t> kids;  // dict: key, value, ...
};

// Printable form of a name or opcode argument from the input, for messages.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64)) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u < 0x7f)
            out += c;
        else
            out += fmt::format("\\x{:02x}", u);
    }
    if (s.size() > 64) out += "...";
    return out;
}

const char* opcode_name(unsigned char op) {
    switch (op) {
        case 'c':
            return "GLOBAL";
        case 0x93:
            return "STACK_GLOBAL";
        case 'R':
            return "REDUCE";
        case 'b':
            return "BUILD";
        case 'i':
            return "INST";
        case 'o':
            return "OBJ";
        case 0x81:
            return "NEWOBJ";
        case 0x92:
            return "NEWOBJ_EX";
        case 'P':
            return "PERSID";
        case 'Q':
            return "BINPERSID";
        case 0x82:
            return "EXT1";
        case 0x83:
            return "EXT2";
        case 0x84:
            return "EXT4";
        case 0x97:
            return "NEXT_BUFFER";
        case 0x98:
            return "READONLY_BUFFER";
        default:
            return nullptr;
    }
}

class Reader {
public:
    Reader(std::string_view data, const Limits& limits) : data_(data), limits_(limits) {}

    Decoded run() {
        Decoded out;
        std::uint32_t root = 0;
        if (!parse(root) || !materialize(root, out)) {
            out.value.reset();
            out.error = fmt::format("pickle: {} (at byte {})", error_, op_pos_);
        }
        return out;
    }

private:
    bool err(std::string message) {
        error_ = std::move(message);
        return false;
    }

    // ---- input
    bool need(std::size_t n) {
        if (data_.size() - pos_ < n) return err(fmt::format("truncated: {} more bytes needed", n));
        return true;
    }
    bool take(std::size_t n, std::string_view& out) {
        if (!need(n)) return false;
        out = data_.substr(pos_, n);
        pos_ += n;
        return true;
    }
    bool line(std::string_view& out) {
        const std::size_t nl = data_.find('\n', pos_);
        if (nl == std::string_view::npos) return err("truncated: a text argument has no end of line");
        out = data_.substr(pos_, nl - pos_);
        pos_ = nl + 1;
        return true;
    }
    template <class U>
    bool le(std::size_t n, U& out) {
        std::string_view b;
        if (!take(n, b)) return false;
        std::uint64_t v = 0;
        for (std::size_t i = n; i-- > 0;) v = (v << 8) | static_cast<std::uint8_t>(b[i]);
        out = static_cast<U>(v);
        return true;
    }
    // A length-prefixed argument; its length is checked against the input first.
    bool counted(std::size_t width, std::string_view& out) {
        std::uint64_t n = 0;
        if (!le(width, n)) return false;
        if (n > data_.size() - pos_)
            return err(fmt::format("length {} exceeds the {} bytes left", n, data_.size() - pos_));
        return take(static_cast<std::size_t>(n), out);
    }

    // ---- graph
    bool add(Node node, std::uint32_t& index) {
        if (nodes_.size() >= limits_.max_values)
            return err(fmt::format("more than {} values", limits_.max_values));
        if (node.text.size() > limits_.max_bytes - std::min(limits_.max_bytes, text_bytes_))
            return err(fmt::format("more than {} bytes of text", limits_.max_bytes));
        text_bytes_ += node.text.size();
        index = static_cast<std::uint32_t>(nodes_.size());
        nodes_.push_back(std::move(node));
        return true;
    }
    bool push(Node node) {
        std::uint32_t index;
        if (!add(std::move(node), index)) return false;
        stack_.push_back(index);
        return true;
    }
    bool push_kind(Kind kind, std::string text = {}) {
        Node n;
        n.kind = kind;
        n.text = std::move(text);
        return push(std::move(n));
    }
    bool push_int(Value v) {
        Node n;
        n.kind = v.kind();
        n.i = v.as_integer();
        n.text = v.text();
        return push(std::move(n));
    }
    std::size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
    bool pop(std::uint32_t& out) {
        if (stack_.size() <= base()) return err("stack underflow");
        out = stack_.back();
        stack_.pop_back();
        return true;
    }
    bool top(std::uint32_t& out) {
        if (stack_.size() <= base()) return err("stack underflow");
        out = stack_.back();
        return true;
    }
    // Moves everything above the last MARK out, and drops the mark.
    bool pop_mark(std::vector<std::uint32_t>& out) {
        if (marks_.empty()) return err("no MARK before a mark-terminated opcode");
        const std::size_t from = marks_.back();
        marks_.pop_back();
        out.assign(stack_.begin() + static_cast<std::ptrdiff_t>(from), stack_.end());
        stack_.resize(from);
        return true;
    }
    bool container(std::uint32_t index, std::initializer_list<Kind> kinds, const char* what) {
        for (Kind k : kinds)
            if (nodes_[index].kind == k && nodes_[index].global == Global::none) return true;
        return err(fmt::format("{} applied to a {}", what, detail::kind_name(nodes_[index].kind)));
    }
    bool build(Kind kind, std::vector<std::uint32_t> kids) {
        if (kind == Kind::dict && kids.size() % 2) return err("odd number of items for a dict");
        Node n;
        n.kind = kind;
        n.kids = std::move(kids);
        return push(std::move(n));
    }
    bool memo_put(std::uint64_t id) {
        std::uint32_t t;
        if (!top(t)) return false;
        if (id >= limits_.max_values) return err(fmt::format("memo index {} too large", id));
        if (id >= memo_.size()) memo_.resize(static_cast<std::size_t>(id) + 1, unset);
        memo_[static_cast<std::size_t>(id)] = t;
        return true;
    }
    bool memo_get(std::uint64_t id) {
        if (id >= memo_.size() || memo_[static_cast<std::size_t>(id)] == unset)
            return err(fmt::format("memo index {} was never stored", id));
        stack_.push_back(memo_[static_cast<std::size_t>(id)]);
        if (stack_.size() > limits_.max_values) return err("stack too deep");
        return true;
    }
    bool text_uint(std::string_view text, std::uint64_t& out) {
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
        if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
            return err(fmt::format("bad memo index '{}'", printable(text)));
        return true;
    }

    bool global(std::string_view module, std::string_view name) {
        Global g = whitelisted(module, name);
        if (g == Global::none)
            return err(
                fmt::format("refused global {}.{}: only set, frozenset, bytes and _codecs.encode "
                            "may be named",
                            printable(module), printable(name)));
        Node n;
        n.global = g;
        return push(std::move(n));
    }

    // Latin-1 bytes from a str whose code points are all below 256.
    bool latin1(const std::string& utf8, std::string& out) {
        for (std::size_t i = 0; i < utf8.size();) {
            std::uint32_t cp;
            const std::size_t n = utf8_sequence(utf8, i, cp, true);
            if (n == 0 || cp > 0xff) return err("_codecs.encode of a str that is not Latin-1");
            out += static_cast<char>(cp);
            i += n;
        }
        return true;
    }

    bool reduce() {
        std::uint32_t args, fn;
        if (!pop(args) || !pop(fn)) return false;
        const Global g = nodes_[fn].global;
        if (g == Global::none)
            return err(
                fmt::format("refused opcode 'R' (REDUCE) of a {}: only the whitelisted globals may be called",
                            detail::kind_name(nodes_[fn].kind)));
        const Node& a = nodes_[args];
        if (a.kind != Kind::tuple || a.global != Global::none) return err("REDUCE arguments are not a tuple");
        const std::vector<std::uint32_t> kids = a.kids;
        switch (g) {
            case Global::set:
            case Global::frozenset: {
                const Kind kind = g == Global::set ? Kind::set : Kind::frozenset;
                if (kids.empty()) return build(kind, {});
                if (kids.size() != 1) return err("set() takes one argument");
                const Node& src = nodes_[kids[0]];
                if (src.global != Global::none || (src.kind != Kind::list && src.kind != Kind::tuple &&
                                                   src.kind != Kind::set && src.kind != Kind::frozenset))
                    return err("set() of something other than a list, tuple or set");
                return build(kind, src.kids);
            }
            case Global::bytes:
                if (!kids.empty()) return err("bytes() with arguments");
                return push_kind(Kind::bytes);
            case Global::bytearray:
                if (kids.empty()) return push_kind(Kind::bytes);
                if (kids.size() != 1 || nodes_[kids[0]].kind != Kind::bytes ||
                    nodes_[kids[0]].global != Global::none)
                    return err("bytearray() of something other than bytes");
                return push_kind(Kind::bytes, nodes_[kids[0]].text);
            case Global::codecs_encode: {
                if (kids.size() != 2 || nodes_[kids[0]].kind != Kind::str ||
                    nodes_[kids[1]].kind != Kind::str || nodes_[kids[0]].global != Global::none ||
                    nodes_[kids[1]].global != Global::none)
                    return err("_codecs.encode takes a str and an encoding");
                const std::string& enc = nodes_[kids[1]].text;
                if (enc != "latin1" && enc != "latin-1")
                    return err(fmt::format("_codecs.encode with encoding '{}': only latin1", printable(enc)));
                std::string bytes;
                if (!latin1(nodes_[kids[0]].text, bytes)) return false;
                return push_kind(Kind::bytes, std::move(bytes));
            }
            case Global::none:
                break;
        }
        return err("unreachable");
    }

    // Python 2 repr() of a byte string (protocol 0 STRING): quotes and escapes.
    bool string_escape(std::string_view text, std::string& out) {
        if (text.size() < 2 || (text.front() != '\'' && text.front() != '"') || text.back() != text.front())
            return err("STRING argument is not quoted");
        text = text.substr(1, text.size() - 2);
        for (std::size_t i = 0; i < text.size(); ++i) {
            char c = text[i];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (++i == text.size()) return err("STRING ends with a backslash");
            c = text[i];
            switch (c) {
                case '\n':
                    break;
                case '\\':
                    out += '\\';
                    break;
                case '\'':
                    out += '\'';
                    break;
                case '"':
                    out += '"';
                    break;
                case 'a':
                    out += '\a';
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'v':
                    out += '\v';
                    break;
                case 'x': {
                    unsigned v = 0;
                    if (i + 2 >= text.size()) return err("bad \\x escape in STRING");
                    auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, v, 16);
                    if (ec != std::errc{} || end != text.data() + i + 3)
                        return err("bad \\x escape in STRING");
                    out += static_cast<char>(v);
                    i += 2;
                    break;
                }
                default:
                    if (c >= '0' && c <= '7') {
                        unsigned v = 0;
                        std::size_t k = 0;
                        while (k < 3 && i + k < text.size() && text[i + k] >= '0' && text[i + k] <= '7')
                            v = v * 8 + static_cast<unsigned>(text[i + k++] - '0');
                        out += static_cast<char>(v & 0xff);
                        i += k - 1;
                    } else {
                        out += '\\';
                        out += c;
                    }
            }
        }
        return true;
    }

    // Python's raw-unicode-escape (protocol 0 UNICODE): bytes are Latin-1
    // code points, except \uXXXX and \UXXXXXXXX after an odd run of backslashes.
    bool raw_unicode_escape(std::string_view text, std::string& out) {
        std::uint32_t high = 0;  // a pending high surrogate
        auto emit = [&](std::uint32_t cp) {
            if (high) {
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    append_utf8(out, 0x10000 + ((high - 0xd800) << 10) + (cp - 0xdc00));
                    high = 0;
                    return;
                }
                append_utf8(out, high);
                high = 0;
            }
            if (cp >= 0xd800 && cp <= 0xdbff)
                high = cp;
            else
                append_utf8(out, cp);
        };
        for (std::size_t i = 0; i < text.size(); ++i) {
            const auto c = static_cast<unsigned char>(text[i]);
            if (c != '\\') {
                emit(c);
                continue;
            }
            std::size_t j = i;
            while (j < text.size() && text[j] == '\\') ++j;
            const std::size_t run = j - i;
            const bool escape = run % 2 == 1 && j < text.size() && (text[j] == 'u' || text[j] == 'U');
            for (std::size_t k = 0; k < run - (escape ? 1 : 0); ++k) emit('\\');
            if (!escape) {
                i = j - 1;
                continue;
            }
            const std::size_t n = text[j] == 'u' ? 4 : 8;
            if (text.size() - j - 1 < n) return err("truncated \\u escape in UNICODE");
            std::uint32_t cp = 0;
            auto [end, ec] = std::from_chars(text.data() + j + 1, text.data() + j + 1 + n, cp, 16);
            if (ec != std::errc{} || end != text.data() + j + 1 + n) return err("bad \\u escape in UNICODE");
            if (cp > 0x10ffff) return err("\\U escape beyond U+10FFFF in UNICODE");
            emit(cp);
            i = j + n;
        }
        if (high) append_utf8(out, high);
        return true;
    }

    // The opcode loop and one member per group of opcodes it dispatches to.
    bool parse(std::uint32_t& root);
    bool frame_op(unsigned char op);
    bool stack_op(unsigned char op);
    bool push_scalar(unsigned char op);
    bool push_decimal(unsigned char op);
    bool push_float(unsigned char op);
    bool push_string(unsigned char op);
    bool build_container(unsigned char op);
    bool fill_container(unsigned char op);
    bool memo_op(unsigned char op);
    bool call_op(unsigned char op);
    bool refuse(unsigned char op);
    bool materialize(std::uint32_t root, Decoded& out);

    static constexpr std::uint32_t unset = std::numeric_limits<std::uint32_t>::max();

    std::string_view data_;
    const Limits& limits_;
    std::size_t pos_ = 0;
    std::size_t op_pos_ = 0;
    std::string error_;
    std::size_t text_bytes_ = 0;
    std::vector<Node> nodes_;
    std::vector<std::uint32_t> stack_;
    std::vector<std::size_t> marks_;
    std::vector<std::uint32_t> memo_;
    std::vector<std::uint32_t> items_;  // scratch for the mark-terminated opcodes, reused
};

// The opcode loop. Each group of opcodes has its own member below; all of
// them read their arguments through the checked input helpers and report a
// failure through err(), so the message and position are the same whichever
// group fails.
bool Reader::parse(std::uint32_t& root) {
    nodes_.reserve(8);
    stack_.reserve(8);
    for (;;) {
        op_pos_ = pos_;
        if (pos_ >= data_.size()) return err("truncated: no STOP opcode");
        const auto op = static_cast<unsigned char>(data_[pos_++]);
        bool ok = false;
        switch (op) {
            case '.':  // STOP
                if (!pop(root)) return false;
                if (pos_ != data_.size()) return err(fmt::format("{} bytes after STOP", data_.size() - pos_));
                return true;
            case 0x80:  // PROTO
            case 0x95:  // FRAME
                ok = frame_op(op);
                break;
            case '(':  // MARK
            case '0':  // POP
            case '1':  // POP_MARK
            case '2':  // DUP
                ok = stack_op(op);
                break;
            case 'N':   // NONE
            case 0x88:  // NEWTRUE
            case 0x89:  // NEWFALSE
            case 'I':   // INT
            case 'L':   // LONG
            case 'J':   // BININT
            case 'K':   // BININT1
            case 'M':   // BININT2
            case 0x8a:  // LONG1
            case 0x8b:  // LONG4
            case 'F':   // FLOAT
            case 'G':   // BINFLOAT
                ok = push_scalar(op);
                break;
            case 'S':   // STRING
            case 'T':   // BINSTRING
            case 'U':   // SHORT_BINSTRING
            case 'B':   // BINBYTES
            case 'C':   // SHORT_BINBYTES
            case 0x8e:  // BINBYTES8
            case 0x96:  // BYTEARRAY8
            case 'V':   // UNICODE
            case 'X':   // BINUNICODE
            case 0x8c:  // SHORT_BINUNICODE
            case 0x8d:  // BINUNICODE8
                ok = push_string(op);
                break;
            case ']':   // EMPTY_LIST
            case ')':   // EMPTY_TUPLE
            case '}':   // EMPTY_DICT
            case 0x8f:  // EMPTY_SET
            case 'l':   // LIST
            case 't':   // TUPLE
            case 'd':   // DICT
            case 0x91:  // FROZENSET
            case 0x85:  // TUPLE1
            case 0x86:  // TUPLE2
            case 0x87:  // TUPLE3
                ok = build_container(op);
                break;
            case 'a':   // APPEND
            case 'e':   // APPENDS
            case 0x90:  // ADDITEMS
            case 's':   // SETITEM
            case 'u':   // SETITEMS
                ok = fill_container(op);
                break;
            case 'p':   // PUT
            case 'q':   // BINPUT
            case 'r':   // LONG_BINPUT
            case 0x94:  // MEMOIZE
            case 'g':   // GET
            case 'h':   // BINGET
            case 'j':   // LONG_BINGET
                ok = memo_op(op);
                break;
            case 'c':   // GLOBAL
            case 0x93:  // STACK_GLOBAL
            case 'R':   // REDUCE
                ok = call_op(op);
                break;
            default:
                return refuse(op);
        }
        if (!ok) return false;
        if (stack_.size() > limits_.max_values) return err("stack too deep");
    }
}

bool Reader::frame_op(unsigned char op) {
    if (op == 0x80) {  // PROTO
        std::uint8_t proto;
        if (!le(1, proto)) return false;
        if (proto > 5) return err(fmt::format("unsupported protocol {}", proto));
        return true;
    }
    std::uint64_t n;  // FRAME: the data is simply inline
    if (!le(8, n)) return false;
    if (n > data_.size() - pos_) return err(fmt::format("frame of {} bytes exceeds the input", n));
    return true;
}

bool Reader::stack_op(unsigned char op) {
    switch (op) {
        case '(':
            if (marks_.size() >= limits_.max_values) return err("too many MARKs");
            marks_.push_back(stack_.size());
            return true;
        case '0':  // POP: an empty frame above the last MARK pops the mark
            if (stack_.size() > base()) {
                stack_.pop_back();
                return true;
            }
            return pop_mark(items_);
        case '1':
            return pop_mark(items_);
        default: {  // DUP
            std::uint32_t a = 0;
            if (!top(a)) return false;
            stack_.push_back(a);
            return true;
        }
    }
}

// INT and LONG: decimal text; INT also spells the Python 2 bools 01 and 00.
bool Reader::push_decimal(unsigned char op) {
    std::string_view arg;
    if (!line(arg)) return false;
    if (op == 'I' && (arg == "01" || arg == "00")) return push_int(Value::boolean(arg == "01"));
    if (op == 'L' && !arg.empty() && arg.back() == 'L') arg.remove_suffix(1);
    Value v;
    if (arg.size() > max_int_digits + 1 || !int_from_decimal(arg, v))
        return err(fmt::format("bad {} '{}'", op == 'I' ? "INT" : "LONG", printable(arg)));
    return push_int(std::move(v));
}

bool Reader::push_float(unsigned char op) {
    std::string_view arg;
    Node n;
    n.kind = Kind::floating;
    if (op == 'G') {  // BINFLOAT: big-endian IEEE 754
        std::uint64_t bits = 0;
        if (!take(8, arg)) return false;
        for (char ch : arg) bits = (bits << 8) | static_cast<std::uint8_t>(ch);
        std::memcpy(&n.f, &bits, sizeof bits);
        return push(std::move(n));
    }
    if (!line(arg)) return false;  // FLOAT: repr() text
    std::string t(arg);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\r')) t.pop_back();
    double d = 0;
    const char* first = t.data();
    if (!t.empty() && t[0] == '+') ++first;
    auto [end, ec] = std::from_chars(first, t.data() + t.size(), d);
    if (t.empty() || end != t.data() + t.size() ||
        (ec != std::errc{} && ec != std::errc::result_out_of_range))
        return err(fmt::format("bad FLOAT '{}'", printable(arg)));
    if (ec == std::errc::result_out_of_range) d = std::strtod(t.c_str(), nullptr);
    n.f = d;
    return push(std::move(n));
}

bool Reader::push_scalar(unsigned char op) {
    switch (op) {
        case 'N':
            return push_kind(Kind::none);
        case 0x88:
        case 0x89:
            return push_int(Value::boolean(op == 0x88));
        case 'I':
        case 'L':
            return push_decimal(op);
        case 'J': {
            std::uint32_t u;
            return le(4, u) && push_int(Value::integer(static_cast<std::int32_t>(u)));
        }
        case 'K': {
            std::uint8_t u;
            return le(1, u) && push_int(Value::integer(u));
        }
        case 'M': {
            std::uint16_t u;
            return le(2, u) && push_int(Value::integer(u));
        }
        case 0x8a:
        case 0x8b: {  // LONG1, LONG4: little-endian two's complement
            std::uint32_t n;
            std::string_view arg;
            if (!le(op == 0x8a ? 1 : 4, n)) return false;
            if (op == 0x8b && (n & 0x80000000u)) return err("negative LONG4 length");
            if (n > max_int_bytes) return err(fmt::format("int of {} bytes is too large", n));
            return take(n, arg) && push_int(int_from_long_bytes(arg));
        }
        default:  // FLOAT, BINFLOAT
            return push_float(op);
    }
}

bool Reader::push_string(unsigned char op) {
    std::string_view arg;
    std::string out;
    switch (op) {
        case 'S':  // STRING: a quoted Python 2 byte string
            return line(arg) && string_escape(arg, out) && push_kind(Kind::bytes, std::move(out));
        case 'V':  // UNICODE: raw-unicode-escape
            return line(arg) && raw_unicode_escape(arg, out) && push_kind(Kind::str, std::move(out));
        case 'X':
        case 0x8c:
        case 0x8d:  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
            if (!counted(op == 0x8c ? 1 : op == 'X' ? 4 : 8, arg)) return false;
            if (!valid_utf8(arg, true)) return err("str is not valid UTF-8");
            return push_kind(Kind::str, std::string(arg));
        default: {  // BINSTRING, SHORT_BINSTRING (Python 2 str), BINBYTES, SHORT_BINBYTES,
                    // BINBYTES8, BYTEARRAY8
            const std::size_t width = (op == 'U' || op == 'C') ? 1 : (op == 0x8e || op == 0x96) ? 8 : 4;
            if (op == 'T' && data_.size() - pos_ >= 4 && (static_cast<unsigned char>(data_[pos_ + 3]) & 0x80))
                return err("negative BINSTRING length");
            return counted(width, arg) && push_kind(Kind::bytes, std::string(arg));
        }
    }
}

bool Reader::build_container(unsigned char op) {
    switch (op) {
        case ']':
            return build(Kind::list, {});
        case ')':
            return build(Kind::tuple, {});
        case '}':
            return build(Kind::dict, {});
        case 0x8f:
            return build(Kind::set, {});
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
            const std::size_t n = op - 0x84u;
            if (stack_.size() < base() + n) return err("stack underflow");
            items_.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
            stack_.resize(stack_.size() - n);
            return build(Kind::tuple, items_);
        }
        default:  // LIST, TUPLE, DICT, FROZENSET from the mark
            if (!pop_mark(items_)) return false;
            return build(op == 'l'   ? Kind::list
                         : op == 't' ? Kind::tuple
                         : op == 'd' ? Kind::dict
                                     : Kind::frozenset,
                         items_);
    }
}

bool Reader::fill_container(unsigned char op) {
    std::uint32_t a = 0, b = 0;
    switch (op) {
        case 'a':  // APPEND
            if (!pop(a) || !top(b) || !container(b, {Kind::list}, "APPEND")) return false;
            nodes_[b].kids.push_back(a);
            return true;
        case 'e':
        case 0x90:  // APPENDS, ADDITEMS
            if (!pop_mark(items_) || !top(b)) return false;
            if (op == 'e' ? !container(b, {Kind::list}, "APPENDS") : !container(b, {Kind::set}, "ADDITEMS"))
                return false;
            break;
        case 's': {  // SETITEM
            std::uint32_t c = 0;
            if (!pop(a) || !pop(b) || !top(c) || !container(c, {Kind::dict}, "SETITEM")) return false;
            nodes_[c].kids.push_back(b);
            nodes_[c].kids.push_back(a);
            return true;
        }
        default:  // SETITEMS
            if (!pop_mark(items_) || !top(b) || !container(b, {Kind::dict}, "SETITEMS")) return false;
            if (items_.size() % 2) return err("odd number of items for SETITEMS");
            break;
    }
    nodes_[b].kids.insert(nodes_[b].kids.end(), items_.begin(), items_.end());
    return true;
}

bool Reader::memo_op(unsigned char op) {
    std::string_view arg;
    switch (op) {
        case 'p': {  // PUT
            std::uint64_t id;
            return line(arg) && text_uint(arg, id) && memo_put(id);
        }
        case 'q':
        case 'r': {  // BINPUT, LONG_BINPUT
            std::uint32_t id;
            return le(op == 'q' ? 1 : 4, id) && memo_put(id);
        }
        case 0x94:  // MEMOIZE
            return memo_put(memo_.size());
        case 'g': {  // GET
            std::uint64_t id;
            return line(arg) && text_uint(arg, id) && memo_get(id);
        }
        default: {  // BINGET, LONG_BINGET
            std::uint32_t id;
            return le(op == 'h' ? 1 : 4, id) && memo_get(id);
        }
    }
}

// GLOBAL and STACK_GLOBAL name only whitelisted callables; REDUCE calls them.
bool Reader::call_op(unsigned char op) {
    if (op == 'R') return reduce();
    if (op == 'c') {
        std::string_view module, name;
        return line(module) && line(name) && global(module, name);
    }
    std::uint32_t a = 0, b = 0;  // STACK_GLOBAL
    if (!pop(b) || !pop(a)) return false;
    if (nodes_[a].kind != Kind::str || nodes_[b].kind != Kind::str || nodes_[a].global != Global::none ||
        nodes_[b].global != Global::none)
        return err("refused opcode 0x93 (STACK_GLOBAL): module and name are not strs");
    return global(nodes_[a].text, nodes_[b].text);
}

bool Reader::refuse(unsigned char op) {
    if (const char* name = opcode_name(op))
        return err(fmt::format("refused opcode {} ({}): it imports or calls code",
                               op >= 0x20 && op < 0x7f ? fmt::format("'{}'", static_cast<char>(op))
                                                       : fmt::format("0x{:02x}", op),
                               name));
    return err(fmt::format("unknown opcode 0x{:02x}", op));
}

// Copies the graph under `root` into a tree, depth-first with an explicit
// stack; a container met again while it is being copied is a cycle.
bool Reader::materialize(std::uint32_t root, Decoded& out) {
    op_pos_ = data_.size();
    struct Frame {
        std::uint32_t node;
        Value* target;
        std::size_t next = 0;
    };
    std::vector<std::uint8_t> open(nodes_.size(), 0);
    std::size_t values = 0, bytes = 0;
    out.value.emplace();
    std::vector<Frame> frames;

    auto start = [&](std::uint32_t index, Value* target) -> bool {
        const Node& n = nodes_[index];
        if (n.global != Global::none) return err("a global used as a value (only REDUCE may call it)");
        if (++values > limits_.max_values) return err(fmt::format("more than {} values", limits_.max_values));
        switch (n.kind) {
            case Kind::none:
                *target = Value();
                return true;
            case Kind::boolean:
                *target = Value::boolean(n.i != 0);
                return true;
            case Kind::integer:
                *target = Value::integer(n.i);
                return true;
            case Kind::floating:
                *target = Value::floating(n.f);
                return true;
            case Kind::big_integer:
            case Kind::str:
            case Kind::bytes:
                bytes += n.text.size();
                if (bytes > limits_.max_bytes)
                    return err(fmt::format("more than {} bytes of text", limits_.max_bytes));
                *target = n.kind == Kind::str     ? Value::str(n.text)
                          : n.kind == Kind::bytes ? Value::bytes(n.text)
                                                  : Value::big_integer(n.text);
                return true;
            case Kind::list:
                *target = Value::list();
                break;
            case Kind::tuple:
                *target = Value::tuple();
                break;
            case Kind::set:
                *target = Value::set();
                break;
            case Kind::frozenset:
                *target = Value::frozenset();
                break;
            case Kind::dict:
                *target = Value::dict();
                break;
        }
        if (open[index]) return err("a container that contains itself");
        if (frames.size() >= limits_.max_depth)
            return err(fmt::format("nested deeper than {} containers", limits_.max_depth));
        if (n.kids.size() > limits_.max_values)
            return err(fmt::format("more than {} values", limits_.max_values));
        open[index] = 1;
        target->items().resize(n.kids.size());
        frames.push_back({index, target});
        return true;
    };

    if (!start(root, &*out.value)) return false;
    while (!frames.empty()) {
        Frame& f = frames.back();
        const Node& n = nodes_[f.node];
        if (f.next == n.kids.size()) {
            open[f.node] = 0;
            frames.pop_back();
            continue;
        }
        const std::size_t i = f.next++;
        Value* child = &f.target->items()[i];
        if (!start(n.kids[i], child)) return false;  // may push a frame (f is then stale)
    }
    return true;
}

// ---- repr --------------------------------------------------------------------

void repr_text(std::string& out, std::string_view s, bool bytes) {
    if (bytes) out += 'b';
    const char quote =
        (s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos) ? '"' : '\'';
    out += quote;
    for (char ch : s) {
        const auto u = static_cast<unsigned char>(ch);
        if (ch == quote || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (ch == '\n') {
            out += "\\n";
        } else if (ch == '\r') {
            out += "\\r";
        } else if (ch == '\t') {
            out += "\\t";
        } else if (u < 0x20 || u == 0x7f || (bytes && u >= 0x80)) {
            out += fmt::format("\\x{:02x}", u);
        } else {
            out += ch;
        }
    }
    out += quote;
}

void repr_into(std::string& out, const Value& v, std::size_t depth) {
    if (depth > 64) {
        out += "...";
        return;
    }
    auto seq = [&](const char* open, const char* close) {
        out += open;
        for (std::size_t i = 0; i < v.items().size(); ++i) {
            if (i) out += ", ";
            repr_into(out, v.items()[i], depth + 1);
        }
        if (v.kind() == Kind::tuple && v.items().size() == 1) out += ',';
        out += close;
    };
    switch (v.kind()) {
        case Kind::none:
            out += "None";
            break;
        case Kind::boolean:
            out += v.as_bool() ? "True" : "False";
            break;
        case Kind::integer:
            out += std::to_string(v.as_integer());
            break;
        case Kind::big_integer:
            out += v.text();
            break;
        case Kind::floating:
            out += retools::detail::python_repr(v.as_double());
            break;
        case Kind::str:
            repr_text(out, v.text(), false);
            break;
        case Kind::bytes:
            repr_text(out, v.text(), true);
            break;
        case Kind::list:
            seq("[", "]");
            break;
        case Kind::tuple:
            seq("(", ")");
            break;
        case Kind::set:
            if (v.items().empty())
                out += "set()";
            else
                seq("{", "}");
            break;
        case Kind::frozenset:
            seq("frozenset({", "})");
            break;
        case Kind::dict:
            out += '{';
            for (std::size_t i = 0; i < v.size(); ++i) {
                if (i) out += ", ";
                repr_into(out, v.key(i), depth + 1);
                out += ": ";
                repr_into(out, v.value(i), depth + 1);
            }
            out += '}';
            break;
    }
}

}  // namespace

// ---- public ------------------------------------------------------------------

std::string Value::repr() const {
    std::string out;
    repr_into(out, *this, 0);
    return out;
}

namespace {

// The pickle of one str as Python writes it (PROTO, FRAME at protocol 4+,
// one BINUNICODE form, a memo put, STOP): what most cached values are. Read
// without building the Reader's graph; anything else, or anything the Reader
// would refuse or has to explain, goes to the Reader. The fuzz target checks
// that both agree.
bool decode_plain_str(std::string_view data, const Limits& limits, Decoded& out) {
    std::size_t pos = 0;
    auto le = [&](std::size_t n, std::uint64_t& v) {
        if (data.size() - pos < n) return false;
        v = 0;
        for (std::size_t k = 0; k < n; ++k)
            v |= std::uint64_t{static_cast<unsigned char>(data[pos + k])} << (8 * k);
        pos += n;
        return true;
    };
    auto op = [&]() -> int { return pos < data.size() ? static_cast<unsigned char>(data[pos++]) : -1; };
    std::uint64_t v = 0;
    int o = op();
    if (o == 0x80) {
        if (!le(1, v) || v > 5) return false;
        o = op();
    }
    if (o == 0x95) {
        if (!le(8, v) || v > data.size() - pos) return false;
        o = op();
    }
    std::size_t width = o == 0x8c ? 1 : o == 'X' ? 4 : o == 0x8d ? 8 : 0;
    if (width == 0 || !le(width, v) || v > data.size() - pos || v > limits.max_bytes || limits.max_values < 1)
        return false;
    const std::string_view text = data.substr(pos, static_cast<std::size_t>(v));
    pos += text.size();
    o = op();
    if (o == 'q' || o == 'r') {
        if (!le(o == 'q' ? 1 : 4, v) || v >= limits.max_values) return false;
        o = op();
    } else if (o == 0x94) {
        o = op();
    }
    if (o != '.' || pos != data.size() || !valid_utf8(text, true)) return false;
    out.value = Value::str(std::string(text));
    return true;
}

}  // namespace

Decoded decode(std::string_view data, const Limits& limits) {
    Decoded fast;
    if (decode_plain_str(data, limits, fast)) return fast;
    return Reader(data, limits).run();
}

Decoded detail::decode_general(std::string_view data, const Limits& limits) {
    return Reader(data, limits).run();
}

bool is_utf8(std::string_view s) noexcept {
    return valid_utf8(s, false);
}

void Writer::integer(std::int64_t i) {
    if (i >= 0 && i <= 0xff) {
        out_ += 'K';
        out_ += static_cast<char>(i);
    } else if (i >= 0 && i <= 0xffff) {
        out_ += 'M';
        out_ += static_cast<char>(i & 0xff);
        out_ += static_cast<char>(i >> 8);
    } else if (i >= std::numeric_limits<std::int32_t>::min() &&
               i <= std::numeric_limits<std::int32_t>::max()) {
        const auto u = static_cast<std::uint32_t>(static_cast<std::int32_t>(i));
        out_ += 'J';
        for (int k = 0; k < 4; ++k) out_ += static_cast<char>((u >> (8 * k)) & 0xff);
    } else {
        // LONG1: minimal little-endian two's complement.
        auto u = static_cast<std::uint64_t>(i);
        std::string b;
        for (int k = 0; k < 8; ++k) b += static_cast<char>((u >> (8 * k)) & 0xff);
        while (b.size() > 1) {
            const auto last = static_cast<std::uint8_t>(b.back());
            const auto prev = static_cast<std::uint8_t>(b[b.size() - 2]);
            if ((last == 0 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80)))
                b.pop_back();
            else
                break;
        }
        out_ += '\x8a';
        out_ += static_cast<char>(b.size());
        out_ += b;
    }
}

void Writer::unsigned_integer(std::uint64_t u) {
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        integer(static_cast<std::int64_t>(u));
        return;
    }
    out_.append("\x8a\x09", 2);
    for (int k = 0; k < 8; ++k) out_ += static_cast<char>((u >> (8 * k)) & 0xff);
    out_ += '\0';
}

bool Writer::big_integer(std::string_view decimal) {
    std::string b;
    if (!decimal_to_long_bytes(decimal, b) || b.size() > max_int_bytes) return false;
    if (b.size() < 256) {
        out_ += '\x8a';
        out_ += static_cast<char>(b.size());
    } else {
        out_ += '\x8b';
        for (int k = 0; k < 4; ++k) out_ += static_cast<char>((b.size() >> (8 * k)) & 0xff);
    }
    out_ += b;
    return true;
}

void Writer::floating(double d) {
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    out_ += 'G';
    for (int k = 7; k >= 0; --k) out_ += static_cast<char>((bits >> (8 * k)) & 0xff);
}

void Writer::str(std::string_view utf8) {
    const auto n = static_cast<std::uint32_t>(utf8.size());
    out_ += 'X';
    for (int k = 0; k < 4; ++k) out_ += static_cast<char>((n >> (8 * k)) & 0xff);
    out_.append(utf8);
}

void Writer::text(std::string_view s) {
    if (valid_utf8(s, false) && s.size() <= 0xffffffffu)
        str(s);
    else
        bytes(s);
}

void Writer::bytes(std::string_view data) {
    // What Python writes for bytes at protocol 2: _codecs.encode(<latin-1 str>, 'latin1').
    std::string latin;
    latin.reserve(data.size() * 2);
    for (char c : data) append_utf8(latin, static_cast<std::uint8_t>(c));
    out_.append("c_codecs\nencode\n");
    str(latin);
    str("latin1");
    out_ += '\x86';
    out_ += 'R';
}

void Writer::begin_set(bool frozen) {
    out_.append(frozen ? "c__builtin__\nfrozenset\n" : "c__builtin__\nset\n");
    begin_list();
}

void Writer::value(const Value& v) {
    switch (v.kind()) {
        case Kind::none:
            none();
            break;
        case Kind::boolean:
            boolean(v.as_bool());
            break;
        case Kind::integer:
            integer(v.as_integer());
            break;
        case Kind::big_integer:
            if (!big_integer(v.text())) none();
            break;
        case Kind::floating:
            floating(v.as_double());
            break;
        case Kind::str:
            text(v.text());
            break;
        case Kind::bytes:
            bytes(v.text());
            break;
        case Kind::list:
            begin_list();
            for (const Value& e : v.items()) value(e);
            end_list();
            break;
        case Kind::tuple:
            begin_tuple();
            for (const Value& e : v.items()) value(e);
            end_tuple();
            break;
        case Kind::set:
        case Kind::frozenset:
            begin_set(v.kind() == Kind::frozenset);
            for (const Value& e : v.items()) value(e);
            end_set();
            break;
        case Kind::dict:
            begin_dict();
            for (const Value& e : v.items()) value(e);
            end_dict();
            break;
    }
}

void Writer::json(const nlohmann::json& j) {
    using T = nlohmann::json::value_t;
    switch (j.type()) {
        case T::null:
        case T::discarded:
            none();
            break;
        case T::boolean:
            boolean(j.get<bool>());
            break;
        case T::number_integer:
            integer(j.get<std::int64_t>());
            break;
        case T::number_unsigned:
            unsigned_integer(j.get<std::uint64_t>());
            break;
        case T::number_float:
            floating(j.get<double>());
            break;
        case T::string:
            text(j.get_ref<const std::string&>());
            break;
        case T::binary: {
            const auto& bin = j.get_binary();
            bytes(std::string_view(reinterpret_cast<const char*>(bin.data()), bin.size()));
            break;
        }
        case T::array:
            begin_list();
            for (const auto& e : j) json(e);
            end_list();
            break;
        case T::object:
            begin_dict();
            for (auto it = j.begin(); it != j.end(); ++it) {
                text(it.key());
                json(it.value());
            }
            end_dict();
            break;
    }
}

std::string encode(const Value& value) {
    std::string out;
    Writer w{out};
    w.begin();
    w.value(value);
    w.end();
    return out;
}

Value from_json(const nlohmann::json& j) {
    using T = nlohmann::json::value_t;
    switch (j.type()) {
        case T::null:
        case T::discarded:
            return Value();
        case T::boolean:
            return Value::boolean(j.get<bool>());
        case T::number_integer:
            return Value::integer(j.get<std::int64_t>());
        case T::number_unsigned: {
            const auto u = j.get<std::uint64_t>();
            if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                return Value::integer(static_cast<std::int64_t>(u));
            return Value::big_integer(std::to_string(u));
        }
        case T::number_float:
            return Value::floating(j.get<double>());
        case T::string: {
            const auto& s = j.get_ref<const std::string&>();
            return is_utf8(s) ? Value::str(s) : Value::bytes(s);
        }
        case T::binary: {
            const auto& bin = j.get_binary();
            return Value::bytes(std::string(reinterpret_cast<const char*>(bin.data()), bin.size()));
        }
        case T::array: {
            Value v = Value::list();
            for (const auto& e : j) v.push_back(from_json(e));
            return v;
        }
        case T::object: {
            Value v = Value::dict();
            for (auto it = j.begin(); it != j.end(); ++it) v.add(Value::str(it.key()), from_json(it.value()));
            return v;
        }
    }
    return Value();
}

std::optional<nlohmann::json> to_json(const Value& value, std::string* why) {
    auto fail = [why](std::string reason) -> std::optional<nlohmann::json> {
        if (why) *why = std::move(reason);
        return std::nullopt;
    };
    switch (value.kind()) {
        case Kind::none:
            return nlohmann::json(nullptr);
        case Kind::boolean:
            return nlohmann::json(value.as_bool());
        case Kind::integer:
            return nlohmann::json(value.as_integer());
        case Kind::big_integer: {
            if (auto u = detail::big_to_u64(value)) return nlohmann::json(*u);
            return fail("int " + value.text() + " does not fit 64 bits");
        }
        case Kind::floating:
            return nlohmann::json(value.as_double());
        case Kind::str:
        case Kind::bytes:
            return nlohmann::json(value.text());
        case Kind::list:
        case Kind::tuple:
        case Kind::set:
        case Kind::frozenset: {
            nlohmann::json arr = nlohmann::json::array();
            for (const Value& e : value.items()) {
                auto j = to_json(e, why);
                if (!j) return std::nullopt;
                arr.push_back(std::move(*j));
            }
            return arr;
        }
        case Kind::dict: {
            nlohmann::json obj = nlohmann::json::object();
            for (std::size_t i = 0; i < value.size(); ++i) {
                const Value& k = value.key(i);
                std::string key;
                if (k.kind() == Kind::str || k.kind() == Kind::bytes || k.kind() == Kind::big_integer)
                    key = k.text();
                else if (k.kind() == Kind::integer)
                    key = std::to_string(k.as_integer());
                else if (k.kind() == Kind::boolean)
                    key = k.as_bool() ? "true" : "false";
                else
                    return fail("a dict key " + k.repr() + " has no JSON form");
                auto j = to_json(value.value(i), why);
                if (!j) return std::nullopt;
                obj[key] = std::move(*j);
            }
            return obj;
        }
    }
    return fail("unknown value");
}

namespace detail {

std::string kind_name(Value::Kind kind) {
    switch (kind) {
        case Kind::none:
            return "None";
        case Kind::boolean:
            return "bool";
        case Kind::integer:
        case Kind::big_integer:
            return "int";
        case Kind::floating:
            return "float";
        case Kind::str:
            return "str";
        case Kind::bytes:
            return "bytes";
        case Kind::list:
            return "list";
        case Kind::tuple:
            return "tuple";
        case Kind::dict:
            return "dict";
        case Kind::set:
            return "set";
        case Kind::frozenset:
            return "frozenset";
    }
    return "value";
}

bool fail(std::string& why, std::string_view expected, const Value& got) {
    why = fmt::format("expected {}, got {}", expected, kind_name(got.kind()));
    return false;
}

std::optional<std::uint64_t> big_to_u64(const Value& v) {
    const std::string& t = v.text();
    std::uint64_t u = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), u);
    if (ec != std::errc{} || end != t.data() + t.size() || t.empty()) return std::nullopt;
    return u;
}

}  // namespace detail
}  // namespace retools::pickle
