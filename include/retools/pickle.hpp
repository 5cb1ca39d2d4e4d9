#pragma once
// Python pickle for plain data: the format Python retools stores cached
// values in. The reader takes protocols 0 to 5 and refuses everything that
// would import or call code; the writer emits protocol 2 (read by Python 2
// and 3) made of data opcodes only.
//
//   C++                                   Python
//   std::string, string_view, char*       str (bytes when not valid UTF-8)
//   bool                                  bool
//   integers                              int
//   float, double                         float
//   std::optional<T>, nullptr             T or None
//   vector, list, deque, array ...        list (tuple is read too)
//   map, unordered_map                    dict
//   set, unordered_set                    set (frozenset is read too)
//   tuple, pair                           tuple (list is read too)
//   nlohmann::json                        the nested value
//   types with to_json / from_json        their JSON value (a struct is a dict)

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <retools/codec.hpp>
#include <retools/detail/concepts.hpp>

namespace retools::pickle {

/// One unpickled Python value: None, bool, int, float, str, bytes, list,
/// tuple, dict, set or frozenset. A plain tree (shared references in the
/// pickle are copied), compared by value.
///
/// ```cpp
/// retools::pickle::Value v = retools::pickle::Value::list({retools::pickle::Value::integer(1)});
/// std::string bytes = retools::pickle::encode(v);
/// ```
class Value {
public:
    /// The Python type.
    enum class Kind : std::uint8_t {
        none,
        boolean,
        integer,      ///< an int that fits std::int64_t
        big_integer,  ///< any other int, kept as decimal text (text())
        floating,
        str,    ///< text(): UTF-8
        bytes,  ///< text(): the bytes (also Python 2's `str`)
        list,
        tuple,
        dict,  ///< items(): key, value, key, value ...
        set,
        frozenset,
    };

    /// None.
    Value() noexcept = default;

    static Value boolean(bool b) {
        Value v{Kind::boolean};
        v.int_ = b ? 1 : 0;
        return v;
    }
    static Value integer(std::int64_t i) {
        Value v{Kind::integer};
        v.int_ = i;
        return v;
    }
    /// An int of any size, from decimal text (`-123...`).
    static Value big_integer(std::string decimal) { return Value{Kind::big_integer, std::move(decimal)}; }
    static Value floating(double d) {
        Value v{Kind::floating};
        v.float_ = d;
        return v;
    }
    /// A Python str from UTF-8 text.
    static Value str(std::string utf8) { return Value{Kind::str, std::move(utf8)}; }
    static Value bytes(std::string data) { return Value{Kind::bytes, std::move(data)}; }
    static Value list(std::vector<Value> items = {}) { return Value{Kind::list, std::move(items)}; }
    static Value tuple(std::vector<Value> items = {}) { return Value{Kind::tuple, std::move(items)}; }
    static Value set(std::vector<Value> items = {}) { return Value{Kind::set, std::move(items)}; }
    static Value frozenset(std::vector<Value> items = {}) { return Value{Kind::frozenset, std::move(items)}; }
    /// An empty dict; add entries with add().
    static Value dict() { return Value{Kind::dict, std::vector<Value>{}}; }

    Kind kind() const noexcept { return kind_; }
    bool is_none() const noexcept { return kind_ == Kind::none; }
    /// The bool (boolean) or the int (integer); 0 otherwise.
    std::int64_t as_integer() const noexcept { return int_; }
    bool as_bool() const noexcept { return int_ != 0; }
    double as_double() const noexcept { return float_; }
    /// str (UTF-8), bytes, or a big_integer's decimal text.
    const std::string& text() const noexcept { return text_; }
    /// Elements of a list, tuple, set or frozenset; a dict's keys and values alternating.
    const std::vector<Value>& items() const noexcept { return items_; }
    std::vector<Value>& items() noexcept { return items_; }
    /// Number of elements, or of a dict's entries.
    std::size_t size() const noexcept { return kind_ == Kind::dict ? items_.size() / 2 : items_.size(); }
    /// A dict's i-th key and value.
    const Value& key(std::size_t i) const { return items_.at(2 * i); }
    const Value& value(std::size_t i) const { return items_.at(2 * i + 1); }
    /// Appends an element (list, tuple, set, frozenset).
    void push_back(Value v) { items_.push_back(std::move(v)); }
    /// Appends a dict entry.
    void add(Value key, Value value) {
        items_.push_back(std::move(key));
        items_.push_back(std::move(value));
    }

    /// Python's repr() of the value, for messages and tests (`[1, 'a']`).
    std::string repr() const;

    friend bool operator==(const Value&, const Value&) = default;

private:
    explicit Value(Kind k) noexcept : kind_(k) {}
    Value(Kind k, std::string text) : kind_(k), text_(std::move(text)) {}
    Value(Kind k, std::vector<Value> items) : kind_(k), items_(std::move(items)) {}

    Kind kind_ = Kind::none;
    std::int64_t int_ = 0;
    double float_ = 0;
    std::string text_;
    std::vector<Value> items_;
};

/// Bounds of the reader. An aggregate: use designated initializers.
struct Limits {
    /// Deepest nesting of containers; default 200. Deeper input is refused.
    std::size_t max_depth = 200;
    /// Most values in the result (shared references count once per copy),
    /// and most memo entries; default 1,048,576.
    std::size_t max_values = std::size_t{1} << 20;
    /// Most bytes of str/bytes text in the result, copies included; default 256 MiB.
    std::size_t max_bytes = std::size_t{256} << 20;
};

/// What decode() returns: a value, or the reason there is none.
struct Decoded {
    std::optional<Value> value;
    /// Why `value` is empty (`refused opcode 'c' (GLOBAL os.system) at byte 0`); empty on success.
    std::string error;
    explicit operator bool() const noexcept { return value.has_value(); }
};

/// Reads a pickle of protocol 0 to 5. Never throws for bad input (only
/// std::bad_alloc): anything that is not plain data within `limits` is an
/// error with a reason. Refused: every opcode that imports or calls
/// (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, NEWOBJ_EX,
/// PERSID, BINPERSID, EXT1/2/4, out-of-band buffers), except these globals,
/// each only applied by REDUCE to plain arguments: `set`, `frozenset`,
/// `bytes()` and `bytearray` of `__builtin__`/`builtins`, and
/// `_codecs.encode(str, 'latin1')` (how protocols 0-2 write bytes). Input must
/// end at its STOP opcode.
///
/// ```cpp
/// auto d = retools::pickle::decode("(lp0\nI1\naVa\np1\na.");
/// if (d) std::cout << d.value->repr() << "\n";   // [1, 'a']
/// else std::cout << d.error << "\n";
/// ```
Decoded decode(std::string_view data, const Limits& limits = {});

/// Writes `value` as protocol 2: data opcodes only, plus the fixed globals
/// `__builtin__.set`/`frozenset` and `_codecs.encode` that Python itself uses
/// for sets and bytes at that protocol. A str that is not valid UTF-8 is
/// written as bytes.
std::string encode(const Value& value);

/// Whether `s` is well-formed UTF-8 (no surrogates, no overlong forms).
bool is_utf8(std::string_view s) noexcept;

/// A JSON value as the Python value `json.loads` would give (a binary value becomes bytes).
Value from_json(const nlohmann::json& j);
/// The JSON value of a Python value: str and bytes become strings, tuples and
/// sets arrays, dict keys that are ints or bools their JSON text (as Python's
/// json.dumps does). nullopt, with `why`, for keys of other types and ints
/// beyond 64 bits.
std::optional<nlohmann::json> to_json(const Value& value, std::string* why = nullptr);

/// Appends protocol-2 opcodes to a string, one value at a time, without
/// building a Value. Containers nest: begin_list(), the elements, end_list().
///
/// ```cpp
/// std::string out;
/// retools::pickle::Writer w{out};
/// w.begin();
/// w.begin_list(); w.integer(1); w.text("a"); w.end_list();
/// w.end();   // out holds a pickle of [1, 'a']
/// ```
class Writer {
public:
    explicit Writer(std::string& out) noexcept : out_(out) {}
    /// The protocol header (`\x80\x02`).
    void begin() { out_.append("\x80\x02", 2); }
    /// STOP.
    void end() { out_ += '.'; }

    void none() { out_ += 'N'; }
    void boolean(bool b) { out_ += b ? '\x88' : '\x89'; }
    void integer(std::int64_t i);
    void unsigned_integer(std::uint64_t u);
    /// An int given as decimal text; false (nothing written) when it is not one.
    bool big_integer(std::string_view decimal);
    void floating(double d);
    /// A str when `s` is valid UTF-8, else bytes.
    void text(std::string_view s);
    /// A str; `utf8` must be valid UTF-8 (see is_utf8()).
    void str(std::string_view utf8);
    void bytes(std::string_view data);
    void begin_list() { out_.append("](", 2); }
    void end_list() { out_ += 'e'; }
    void begin_tuple() { out_ += '('; }
    void end_tuple() { out_ += 't'; }
    void begin_dict() { out_.append("}(", 2); }
    void end_dict() { out_ += 'u'; }
    void begin_set(bool frozen = false);
    void end_set() { out_.append("e\x85R", 3); }
    /// A whole Value.
    void value(const Value& v);
    /// A JSON value (see from_json()).
    void json(const nlohmann::json& j);

private:
    std::string& out_;
};

// ---- C++ types <-> Python values --------------------------------------------

namespace detail {

using ::retools::detail::is_optional;
using ::retools::detail::JsonConvertible;
using ::retools::detail::MapLike;
using ::retools::detail::SetLike;
using ::retools::detail::StringLike;
using ::retools::detail::TupleLike;

template <class T>
concept SequenceLike = std::ranges::input_range<const T&> && !StringLike<T> && !MapLike<T> && !SetLike<T> &&
                       !std::is_same_v<std::remove_cvref_t<std::ranges::range_value_t<const T&>>, T>;
template <class T>
concept FixedArray = requires {
    std::tuple_size<T>::value;
}
&&std::ranges::range<T>;

template <class T>
constexpr bool mapped();

template <class Tuple, std::size_t... I>
constexpr bool mapped_tuple(std::index_sequence<I...>) {
    return (mapped<std::remove_cvref_t<std::tuple_element_t<I, Tuple>>>() && ...);
}

template <class T>
constexpr bool mapped() {
    if constexpr (std::is_same_v<T, nlohmann::json> || std::is_same_v<T, Value> || StringLike<T> ||
                  std::is_arithmetic_v<T> || std::is_same_v<T, std::nullptr_t>) {
        return true;
    } else if constexpr (is_optional<T>::value) {
        return mapped<typename T::value_type>();
    } else if constexpr (MapLike<T>) {
        return mapped<std::remove_cvref_t<typename T::key_type>>() && mapped<typename T::mapped_type>();
    } else if constexpr (SetLike<T>) {
        return mapped<std::remove_cvref_t<typename T::key_type>>();
    } else if constexpr (TupleLike<T>) {
        return mapped_tuple<T>(std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (SequenceLike<T>) {
        return mapped<std::remove_cvref_t<std::ranges::range_value_t<const T&>>>();
    } else {
        return JsonConvertible<T>;
    }
}

std::string kind_name(Value::Kind kind);
bool fail(std::string& why, std::string_view expected, const Value& got);
/// A big_integer's value when it fits std::uint64_t.
std::optional<std::uint64_t> big_to_u64(const Value& v);

}  // namespace detail

/// True when T has a built-in Python mapping (the table at the top of this header).
template <class T>
concept Mapped = detail::mapped<std::remove_cvref_t<T>>();

/// Writes `value` (any Mapped type) with `w`.
template <Mapped T>
void write(Writer& w, const T& value) {
    using namespace detail;
    if constexpr (std::is_same_v<T, Value>) {
        w.value(value);
    } else if constexpr (std::is_same_v<T, nlohmann::json>) {
        w.json(value);
    } else if constexpr (std::is_same_v<T, bool>) {
        w.boolean(value);
    } else if constexpr (std::is_same_v<T, char>) {
        w.text(std::string_view(&value, 1));
    } else if constexpr (StringLike<T>) {
        w.text(std::string_view(value));
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
        w.integer(static_cast<std::int64_t>(value));
    } else if constexpr (std::is_integral_v<T>) {
        w.unsigned_integer(static_cast<std::uint64_t>(value));
    } else if constexpr (std::is_floating_point_v<T>) {
        w.floating(static_cast<double>(value));
    } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
        w.none();
    } else if constexpr (is_optional<T>::value) {
        if (value)
            write(w, *value);
        else
            w.none();
    } else if constexpr (MapLike<T>) {
        w.begin_dict();
        for (const auto& [k, v] : value) {
            write(w, k);
            write(w, v);
        }
        w.end_dict();
    } else if constexpr (SetLike<T>) {
        w.begin_set();
        for (const auto& element : value) write(w, element);
        w.end_set();
    } else if constexpr (TupleLike<T>) {
        w.begin_tuple();
        std::apply([&w](const auto&... e) { (write(w, e), ...); }, value);
        w.end_tuple();
    } else if constexpr (SequenceLike<T>) {
        w.begin_list();
        for (const auto& element : value) write(w, element);
        w.end_list();
    } else {
        w.json(nlohmann::json(value));
    }
}

/// Reads `v` into `out`; false, with the reason in `why`, when `v` is not a
/// T (a different type, an int out of range, a wrong tuple size ...).
template <Mapped T>
bool read(const Value& v, T& out, std::string& why) {
    using namespace detail;
    using K = Value::Kind;
    if constexpr (std::is_same_v<T, Value>) {
        out = v;
        return true;
    } else if constexpr (std::is_same_v<T, nlohmann::json>) {
        auto j = to_json(v, &why);
        if (!j) return false;
        out = std::move(*j);
        return true;
    } else if constexpr (std::is_same_v<T, bool>) {
        if (v.kind() != K::boolean) return fail(why, "bool", v);
        out = v.as_bool();
        return true;
    } else if constexpr (std::is_same_v<T, std::string>) {
        if (v.kind() != K::str && v.kind() != K::bytes) return fail(why, "str", v);
        out = v.text();
        return true;
    } else if constexpr (StringLike<T>) {
        static_assert(sizeof(T) == 0,
                      "retools::pickle::read: read text into a std::string, not a view or pointer");
        return false;
    } else if constexpr (std::is_same_v<T, char>) {
        if ((v.kind() != K::str && v.kind() != K::bytes) || v.text().size() != 1)
            return fail(why, "a str of one byte", v);
        out = v.text()[0];
        return true;
    } else if constexpr (std::is_integral_v<T>) {
        if (v.kind() == K::integer || v.kind() == K::boolean) {
            if (std::in_range<T>(v.as_integer())) {
                out = static_cast<T>(v.as_integer());
                return true;
            }
        } else if (v.kind() == K::big_integer) {
            auto u = big_to_u64(v);
            if (u && std::in_range<T>(*u)) {
                out = static_cast<T>(*u);
                return true;
            }
        } else {
            return fail(why, "int", v);
        }
        why = "int " + v.repr() + " out of range of the C++ type";
        return false;
    } else if constexpr (std::is_floating_point_v<T>) {
        if (v.kind() == K::floating)
            out = static_cast<T>(v.as_double());
        else if (v.kind() == K::integer)
            out = static_cast<T>(v.as_integer());
        else
            return fail(why, "float", v);
        return true;
    } else if constexpr (std::is_same_v<T, std::nullptr_t>) {
        if (!v.is_none()) return fail(why, "None", v);
        return true;
    } else if constexpr (is_optional<T>::value) {
        if (v.is_none()) {
            out.reset();
            return true;
        }
        typename T::value_type inner{};
        if (!read(v, inner, why)) return false;
        out = std::move(inner);
        return true;
    } else if constexpr (MapLike<T>) {
        if (v.kind() != K::dict) return fail(why, "dict", v);
        out.clear();
        for (std::size_t i = 0; i < v.size(); ++i) {
            std::remove_cvref_t<typename T::key_type> key{};
            typename T::mapped_type mapped{};
            if (!read(v.key(i), key, why) || !read(v.value(i), mapped, why)) return false;
            out.insert_or_assign(std::move(key),
                                 std::move(mapped));  // a repeated key: the last wins, as in Python
        }
        return true;
    } else if constexpr (SetLike<T>) {
        if (v.kind() != K::set && v.kind() != K::frozenset) return fail(why, "set", v);
        out.clear();
        for (const Value& item : v.items()) {
            std::remove_cvref_t<typename T::key_type> element{};
            if (!read(item, element, why)) return false;
            out.insert(std::move(element));
        }
        return true;
    } else if constexpr (TupleLike<T>) {
        if (v.kind() != K::tuple && v.kind() != K::list) return fail(why, "tuple", v);
        if (v.size() != std::tuple_size_v<T>) {
            why = "expected a tuple of " + std::to_string(std::tuple_size_v<T>) + ", got " + v.repr();
            return false;
        }
        std::size_t i = 0;
        return std::apply([&](auto&... e) { return (read(v.items()[i++], e, why) && ...); }, out);
    } else if constexpr (SequenceLike<T>) {
        if (v.kind() != K::list && v.kind() != K::tuple) return fail(why, "list", v);
        if constexpr (FixedArray<T>) {
            if (v.size() != std::tuple_size_v<T>) {
                why = "expected a list of " + std::to_string(std::tuple_size_v<T>) + ", got " + v.repr();
                return false;
            }
            std::size_t i = 0;
            for (auto& element : out)
                if (!read(v.items()[i++], element, why)) return false;
            return true;
        } else {
            out.clear();
            for (const Value& item : v.items()) {
                std::ranges::range_value_t<T> element{};
                if (!read(item, element, why)) return false;
                out.insert(out.end(), std::move(element));
            }
            return true;
        }
    } else {
        auto j = to_json(v, &why);
        if (!j) return false;
        try {
            out = j->template get<T>();
            return true;
        } catch (const std::exception& e) {
            why = std::string("not a valid value for the C++ type: ") + e.what();
            return false;
        }
    }
}

/// A pickle (protocol 2) of `value`.
///
/// ```cpp
/// std::string p = retools::pickle::dumps(std::map<std::string, double>{{"a", 0.5}});
/// ```
template <Mapped T>
std::string dumps(const T& value) {
    std::string out;
    Writer w{out};
    w.begin();
    write(w, value);
    w.end();
    return out;
}

/// Reads a pickle as a T: nullopt, with the reason in `*why`, when it is not
/// valid plain data or not a T.
///
/// ```cpp
/// std::optional<std::vector<int>> v = retools::pickle::loads<std::vector<int>>("(lp0\nI1\na.");
/// ```
template <Mapped T>
std::optional<T> loads(std::string_view data, std::string* why = nullptr, const Limits& limits = {}) {
    Decoded d = decode(data, limits);
    std::string reason;
    std::optional<T> out;
    if (!d) {
        reason = std::move(d.error);
    } else {
        T value{};
        if (read(*d.value, value, reason)) out = std::move(value);
    }
    if (why) *why = std::move(reason);
    return out;
}

}  // namespace retools::pickle
