"""A seeded behaviour simulator: e-commerce shoppers over several weeks, as `ShopEvent` dicts. Pure.

Each user draws a latent archetype, which drives what each of their sessions is for (its goal)
and what happens next (when they come back, whether they buy, whether they go silent):

| archetype        | sessions                                    | what follows                    |
|------------------|---------------------------------------------|---------------------------------|
| `browser`        | look around a few categories, some bounces  | back in days; rarely buys       |
| `comparer`       | refine searches, revisit favourites         | readiness grows until they buy  |
| `decided_buyer`  | straight to the item, cart, checkout        | buys now or returns in hours    |
| `cart_abandoner` | fill the cart, check shipping, remove items | more cart activity, seldom buys |
| `support_seeker` | order status, support messages, reviews     | unresolved complaint → silence  |
| `lapsing`        | ever shorter visits                         | silent after a personal day     |

Noise on top: misclicks (a stray click, then straight on), bounces (one-view sessions), repeated
views, typos in searches, advice and questions in otherwise ordinary sessions.

Randomness comes only from `random.Random` instances seeded from (seed, user index), so a user's
history depends on nothing else: the first N users are the same whatever N is. Every event is a
dict valid under `streams.core.events.ShopEvent` (the tests check). Ground truth travels beside the
events (`UserHistory.archetype`, per-session goal and the needs written into messages), for
tests that compare labels against what the simulator meant.

Live source: `event_stream(n_users, config)` yields all users' events in event-time order, as a
demo producer or an end-to-end test would send them; `known_labels(history, window_end)` gives the
outcome labels of any window of that user (the simulation knows the whole future).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.core.labelling import DEFAULT_LABEL_POLICY, LabelPolicy, WindowLabels, label_window
from streams.core.timeunits import DAY_MS, HOUR_MS, MINUTE_MS
from training.data.catalog import COLOURS, PRODUCT_TYPES, Product, build_catalog, products_of_type

MIN_SESSION_GAP_MS = 45 * MINUTE_MS  # longer than the worker's 30 min gap: one goal = one session

ARCHETYPES: tuple[str, ...] = (
    "browser",
    "comparer",
    "decided_buyer",
    "cart_abandoner",
    "support_seeker",
    "lapsing",
)
ARCHETYPE_WEIGHTS: tuple[float, ...] = (0.22, 0.17, 0.15, 0.16, 0.16, 0.14)
# Mean days between visits when nothing in particular brings the user back.
_MEAN_GAP_DAYS = {
    "browser": 2.6,
    "comparer": 1.4,
    "decided_buyer": 2.0,
    "cart_abandoner": 1.6,
    "support_seeker": 2.2,
    "lapsing": 1.5,
}
_PAGES_HELP = ("help center", "returns policy", "order status")
# Chance that a user never comes back after a session, by archetype; what happened in the session
# adds to it (`_leave_chance`).
_BASE_LEAVE = {
    "browser": 0.06,
    "comparer": 0.03,
    "decided_buyer": 0.03,
    "cart_abandoner": 0.05,
    "support_seeker": 0.04,
    "lapsing": 0.08,
}
_QUIT_WORDS = ("delete my account", "unsubscribe")


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 0
    start_ms: int = 1_709_251_200_000  # 2024-03-01T00:00:00Z; pass your own for a live demo
    days: float = 28.0  # every user's history is complete up to start + days
    catalog_seed: int = 7

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.days * DAY_MS)


@dataclass(frozen=True, slots=True)
class SessionTruth:
    """What the simulator meant one session to be (ground truth, not seen by any model)."""

    start: int
    end: int
    goal: str  # browse / bounce / compare / buy / abandon / support / review
    needs: tuple[str, ...]  # needs written into its support messages and reviews


@dataclass(frozen=True, slots=True)
class UserHistory:
    user_id: str
    archetype: str
    events: tuple[dict[str, Any], ...]  # sorted by (ts, event_id)
    sessions: tuple[SessionTruth, ...]
    observed_until: int  # the history is complete up to this event time


# --- message templates, per need -------------------------------------------------------------

_COMPLAINTS = (
    "My {noun} arrived {damage}. Order {order}.",
    "Order {order} still hasn't arrived and it's been {n} days.",
    "I was charged twice for order {order}!",
    "The {noun} stopped working after {n} days, really disappointed.",
    "You sent me the wrong {wrong} for order {order}.",
    "The {noun} looks nothing like the photos. Unacceptable.",
    "This is my third message about order {order}: the {noun} is defective and nobody answers.",
)
_REQUESTS = (
    "Please cancel order {order}.",
    "Could you change the delivery address for order {order}? I moved last week.",
    "I'd like to return the {noun}, please send me a return label.",
    "Can you send me an invoice for order {order}?",
    "Can I exchange the {noun} for a different size?",
    "Please delete my account and all my data.",
    "Please unsubscribe me from all marketing emails.",
    "I want to cancel my order, I found it cheaper elsewhere.",
)
_ADVICE = (
    "Which {noun} would you recommend for {use}?",
    "Should I get the {a} or the {b}?",
    "What's the best {noun} under {price} euros?",
    "Help me choose a {noun} for {use}, I can't decide.",
    "Is the {a} worth the extra money over the {b}?",
)
_QUERIES = (
    "Does the {title} work with {thing}?",
    "When will order {order} arrive?",
    "Is the {noun} in stock in {colour}?",
    "How long is the warranty on the {noun}?",
    "Do you ship to {country}?",
    "What are the dimensions of the {noun}?",
)
_NOTICES = (
    "Just letting you know I moved, my new address is in my account.",
    "FYI the courier left the parcel with my neighbour, all good.",
    "Thanks, the {noun} arrived today and works great.",
    "Heads up: I'll be travelling until {month}, no action needed.",
    "I updated my payment card in my account.",
    "Great service last time, thank you!",
)
_TEMPLATES = {
    "complaint": _COMPLAINTS,
    "request": _REQUESTS,
    "advice": _ADVICE,
    "query": _QUERIES,
    "notice": _NOTICES,
}
_REVIEWS_LOW = (
    "Stopped working after a week.",
    "Cheap plastic, fell apart in days.",
    "Nothing like the photos, would not buy again.",
    "Arrived damaged and support never replied.",
    "Way too small and the return was a pain.",
)
_REVIEWS_MID = (
    "It's ok, a bit smaller than expected.",
    "Does the job, nothing special.",
    "Decent for the price, delivery was slow.",
)
_REVIEWS_HIGH = (
    "Love it, great {noun}.",
    "Works perfectly, fast delivery.",
    "Great value for the price.",
    "Exactly as described, would buy again.",
    "Excellent quality, my second one.",
)
_FILL = {
    "damage": ("broken", "damaged", "with a cracked casing", "scratched all over",
               "with missing parts"),
    "wrong": ("item", "size", "colour"),
    "thing": ("my phone", "a Mac", "Android", "my old charger", "a 220V socket"),
    "country": ("Switzerland", "Norway", "the UK", "Iceland"),
    "month": ("next Monday", "the end of the month", "mid April"),
}


def _typo(rng: random.Random, text: str) -> str:
    """Swap or drop one inner letter: the typos real search boxes see."""
    if len(text) < 5:
        return text
    i = rng.randrange(1, len(text) - 2)
    if rng.random() < 0.5:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + text[i + 1 :]


@dataclass
class _Shopper:
    """Mutable per-user state while one history is generated (never leaves `simulate_user`)."""

    user_id: str
    archetype: str
    rng: random.Random
    catalog: tuple[Product, ...]
    t: int  # current event time, ms
    interest: int  # product type index the user is after
    readiness: float = 0.0  # 0..1: how close the user is to buying their interest
    favourites: list[Product] = field(default_factory=list)
    cart: list[Product] = field(default_factory=list)
    orders: list[tuple[str, Product]] = field(default_factory=list)
    grievance: bool = False  # an unresolved problem with an order
    pending_checkout: bool = False  # left at checkout: comes back soon to finish
    asked_to_quit: bool = False  # asked to delete the account or to unsubscribe
    compare_rounds: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # of the session being generated

    # --- low-level emission ------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        doc = {
            "event_id": f"ev-{self.rng.getrandbits(64):016x}",
            "user_id": self.user_id,
            "ts": self.t,
            "type": kind,
        }
        doc.update({k: v for k, v in fields.items() if v is not None})
        self.events.append(doc)
        return doc

    def _advance(self, seconds: float) -> None:
        self.t += max(1000, int(seconds * 1000))

    def view(self, product: Product, dwell: float | None = None) -> None:
        dwell = dwell if dwell is not None else self.rng.lognormvariate(3.4, 0.7)  # ~30 s
        self._event("view", item=product.as_item(), duration_s=round(dwell, 1))
        self._advance(dwell + self.rng.uniform(1, 6))

    def click(self, product: Product) -> None:
        self._event("click", item=product.as_item())
        self._advance(self.rng.uniform(1, 5))

    def page(self, name: str, dwell: float | None = None) -> None:
        dwell = dwell if dwell is not None else self.rng.lognormvariate(2.6, 0.6)  # ~13 s
        self._event("view", page=name, duration_s=round(dwell, 1))
        self._advance(dwell + self.rng.uniform(1, 4))

    def search(self, query: str) -> None:
        if self.rng.random() < 0.08:
            query = _typo(self.rng, query)
        self._event("search", query=query)
        self._advance(self.rng.uniform(3, 15))

    def cart_add(self, product: Product) -> None:
        self._event("add_to_cart", item=product.as_item())
        if product not in self.cart:
            self.cart.append(product)
        self._advance(self.rng.uniform(3, 20))

    def cart_remove(self, product: Product) -> None:
        self._event("remove_from_cart", item=product.as_item())
        self.cart.remove(product)
        self._advance(self.rng.uniform(3, 20))

    def message(self, need: str, product: Product | None = None) -> None:
        text = self._compose(need, product)
        self.asked_to_quit |= any(word in text.lower() for word in _QUIT_WORDS)
        self._event("support_message", text=text)
        self.needs.append(need)
        self._advance(self.rng.uniform(40, 240))  # typing, waiting for an answer

    def review(self, product: Product, rating: int) -> None:
        if rating <= 2:
            text, need = self.rng.choice(_REVIEWS_LOW), "complaint"
        elif rating == 3:
            text, need = self.rng.choice(_REVIEWS_MID), "notice"
        else:
            text, need = self.rng.choice(_REVIEWS_HIGH), "notice"
        kind = PRODUCT_TYPES[product.type_index]
        self._event("review", item=product.as_item(), rating=rating,
                    text=text.format(noun=kind.noun))
        self.needs.append(need)
        self._advance(self.rng.uniform(30, 120))

    # --- helpers -----------------------------------------------------------------------------

    def _compose(self, need: str, product: Product | None) -> str:
        rng = self.rng
        product = product or self.random_of_type(self.interest)
        kind = PRODUCT_TYPES[product.type_index]
        pair = self.shortlist(2)
        order = self.orders[-1][0] if self.orders else str(rng.randrange(100_000, 999_999))
        values = {
            "noun": kind.noun,
            "title": product.title,
            "order": order,
            "n": rng.randrange(3, 15),
            "use": rng.choice(kind.uses),
            "a": pair[0].title,
            "b": pair[1].title,
            "price": int(round(kind.price_band[1] * rng.uniform(0.3, 0.7), -1)) or 10,
            "colour": rng.choice(COLOURS),
        }
        values.update({k: rng.choice(v) for k, v in _FILL.items()})
        return rng.choice(_TEMPLATES[need]).format(**values)

    def random_of_type(self, type_index: int) -> Product:
        return self.rng.choice(products_of_type(self.catalog, type_index))

    def random_product(self) -> Product:
        return self.rng.choice(self.catalog)

    def shortlist(self, n: int) -> list[Product]:
        pool = [p for p in self.favourites if p.type_index == self.interest]
        pool += products_of_type(self.catalog, self.interest)
        out: list[Product] = []
        for p in pool:
            if p not in out:
                out.append(p)
            if len(out) == n:
                break
        return out

    def query_for(self, stage: int) -> str:
        """A search for the current interest; later stages refine (attribute, brand, price)."""
        rng = self.rng
        kind = PRODUCT_TYPES[self.interest]
        if stage <= 0:
            return kind.noun
        attribute = rng.choice(kind.attributes).lower()
        if stage == 1:
            return f"{attribute} {kind.noun}"
        if self.favourites and rng.random() < 0.5:
            fav = self.favourites[-1]
            return f"{fav.brand.lower()} {fav.attribute.lower()} {kind.noun}"
        cap = int(round(kind.price_band[1] * rng.uniform(0.3, 0.8), -1)) or 10
        return f"{attribute} {kind.noun} under {cap}"

    def maybe_misclick(self) -> None:
        if self.rng.random() < 0.06:
            self.click(self.random_product())

    def new_interest(self) -> None:
        self.interest = self.rng.randrange(len(PRODUCT_TYPES))
        self.readiness = self.rng.uniform(0.0, 0.2)
        self.favourites = []
        self.compare_rounds = 0


# --- session scripts: each appends one session's events --------------------------------------


def _browse(s: _Shopper) -> None:
    rng = s.rng
    categories = rng.sample(range(len(PRODUCT_TYPES)), k=rng.randint(1, 3))
    if rng.random() < 0.4:
        s.page(rng.choice(("home", "home", "deals")))
    last: Product | None = None
    for _ in range(rng.randint(2, 9)):
        r = rng.random()
        if r < 0.55 or last is None:
            last = s.random_of_type(rng.choice(categories))
            s.view(last)
        elif r < 0.68:
            s.view(last)  # a repeated view
        elif r < 0.80:
            last = s.random_of_type(rng.choice(categories))
            s.click(last)
        elif r < 0.92:
            s.search(PRODUCT_TYPES[rng.choice(categories)].noun)
        else:
            s.page("deals")
        s.maybe_misclick()
    if last is not None and last.type_index == s.interest:
        s.readiness = min(1.0, s.readiness + 0.1)
    if rng.random() < 0.04 and last is not None:  # impulse
        s.cart_add(last)


def _bounce(s: _Shopper) -> None:
    rng = s.rng
    if rng.random() < 0.5:
        s.page("home", dwell=rng.uniform(1, 8))
    else:
        s.view(s.random_product(), dwell=rng.uniform(1, 8))


def _compare(s: _Shopper) -> None:
    rng = s.rng
    s.search(s.query_for(s.compare_rounds))
    options = products_of_type(s.catalog, s.interest)
    rng.shuffle(options)
    for product in options[: rng.randint(3, 6)]:
        s.view(product)
        s.maybe_misclick()
        if rng.random() < 0.35 and product not in s.favourites:
            s.favourites.append(product)
    if rng.random() < 0.3:
        kind = PRODUCT_TYPES[s.interest]
        if rng.random() < 0.5:
            s.search(f"best {kind.noun} for {rng.choice(kind.uses)}")
        else:
            a, b = s.shortlist(2)
            s.search(f"{a.brand.lower()} vs {b.brand.lower()} {kind.noun}")
    s.search(s.query_for(s.compare_rounds + 1))
    for product in s.shortlist(rng.randint(1, 2)):
        for _ in range(rng.randint(1, 3)):  # going back to the favourites
            s.view(product)
    if rng.random() < 0.12:
        s.message(rng.choice(("advice", "query")))
    s.compare_rounds += 1
    s.readiness = min(1.0, s.readiness + rng.uniform(0.2, 0.4))
    if s.readiness > 0.75 and rng.random() < 0.5:
        s.cart_add(s.shortlist(1)[0])
        s.page("shipping info")


def _buy(s: _Shopper) -> None:
    rng = s.rng
    target = s.shortlist(1)[0] if s.favourites else s.random_of_type(s.interest)
    if not s.pending_checkout:
        if rng.random() < 0.5:
            s.search(s.query_for(2))
        s.view(target)
        if rng.random() < 0.15:
            s.message("query", target)
        s.cart_add(target)
    s.page("cart")
    s.page("checkout")
    finishes = 0.9 if s.pending_checkout else (0.7 if s.archetype == "decided_buyer" else 0.55)
    if rng.random() < finishes or not s.cart:
        bought = s.cart or [target]
        order = str(rng.randrange(100_000, 999_999))
        for product in bought:  # one purchase event per item, a second or two apart
            s._event("purchase", item=product.as_item())
            s.orders.append((order, product))
            s._advance(rng.uniform(1, 3))
        s._advance(rng.uniform(5, 30))
        s.page("order status", dwell=rng.uniform(3, 20))
        s.cart = []
        s.pending_checkout = False
        if rng.random() < 0.15:  # post-purchase problem, discovered later
            s.grievance = True
        s.new_interest()
    else:
        s.pending_checkout = True  # left at checkout: comes back within hours


def _abandon(s: _Shopper) -> None:
    rng = s.rng
    for product in products_of_type(s.catalog, s.interest)[: rng.randint(1, 4)]:
        s.view(product)
        if rng.random() < 0.6:
            s.cart_add(product)
    if not s.cart:
        s.cart_add(s.random_of_type(s.interest))
    s.page("cart")
    if rng.random() < 0.6:
        s.page("shipping info")
    if rng.random() < 0.2:
        s.search(rng.choice(("discount code", "free shipping", "voucher")))
    if rng.random() < 0.4:
        s.page("checkout", dwell=rng.uniform(5, 40))
    if rng.random() < 0.45 and s.cart:
        s.cart_remove(rng.choice(s.cart))
    s.readiness = min(1.0, s.readiness + 0.05)


def _support(s: _Shopper) -> None:
    rng = s.rng
    product = s.orders[-1][1] if s.orders else None
    s.page(rng.choice(_PAGES_HELP))
    if s.grievance:
        need = rng.choices(("complaint", "request"), (0.6, 0.4))[0]
    elif product is not None:
        need = rng.choices(("query", "request", "notice", "complaint"), (0.3, 0.35, 0.2, 0.15))[0]
    else:  # pre-sales
        need = rng.choices(("query", "advice", "notice"), (0.45, 0.35, 0.2))[0]
    s.message(need, product)
    if rng.random() < 0.3:  # a follow-up, sometimes escalating
        s.message("complaint" if need == "complaint" or rng.random() < 0.3 else need, product)
    if need == "request" and rng.random() < 0.5:
        s.page("returns policy")
    if need == "complaint":
        s.grievance = rng.random() < 0.6  # resolved or not, which shows in what follows


def _review(s: _Shopper) -> None:
    rng = s.rng
    product = s.orders[-1][1] if s.orders else s.random_product()
    s.view(product)
    rating = rng.choice((1, 1, 2)) if s.grievance else rng.choices((3, 4, 5), (0.2, 0.35, 0.45))[0]
    s.review(product, rating)


_SCRIPTS = {
    "browse": _browse,
    "bounce": _bounce,
    "compare": _compare,
    "buy": _buy,
    "abandon": _abandon,
    "support": _support,
    "review": _review,
}


# --- what comes next --------------------------------------------------------------------------


def _choose_goal(s: _Shopper, lapse_progress: float) -> str:
    rng = s.rng
    if s.pending_checkout:
        return "buy" if rng.random() < 0.85 else "abandon"
    if s.grievance and rng.random() < 0.6:
        return rng.choice(("support", "support", "review"))
    goals: dict[str, float]
    match s.archetype:
        case "browser":
            goals = {
                "browse": 0.64, "bounce": 0.14, "compare": 0.12, "support": 0.04, "buy": 0.03,
                "review": 0.03,
            }
        case "comparer":
            if s.readiness > 0.75:
                goals = {"buy": 0.6, "abandon": 0.15, "compare": 0.25}
            else:
                goals = {"compare": 0.7, "browse": 0.2, "support": 0.05, "bounce": 0.05}
        case "decided_buyer":
            goals = {"buy": 0.5, "browse": 0.2, "review": 0.15, "support": 0.1, "bounce": 0.05}
        case "cart_abandoner":
            goals = {"abandon": 0.62, "browse": 0.16, "buy": 0.1, "compare": 0.07, "bounce": 0.05}
        case "support_seeker":
            goals = (
                {"support": 0.45, "review": 0.2, "browse": 0.2, "buy": 0.15}
                if s.orders
                else {"buy": 0.45, "support": 0.25, "browse": 0.3}
            )
        case _:  # lapsing: visits get shorter as the lapse nears
            goals = {
                "browse": 0.55 - 0.35 * lapse_progress,
                "bounce": 0.1 + 0.5 * lapse_progress,
                "compare": 0.15,
                "support": 0.1,
                "review": 0.1,
            }
    names = list(goals)
    return rng.choices(names, [goals[n] for n in names])[0]


def _next_gap_ms(s: _Shopper, goal: str) -> int:
    """Time from the end of a session to the start of the next one."""
    rng = s.rng
    if s.pending_checkout:
        hours = rng.uniform(1, 16)
    elif goal == "compare" and s.readiness > 0.75:
        hours = rng.uniform(3, 40)  # ready: back soon to decide
    elif goal == "abandon":
        hours = rng.lognormvariate(math.log(22), 0.6)
    elif goal == "support" and s.grievance and rng.random() < 0.6:
        hours = rng.uniform(8 * 24, 30 * 24)  # an unresolved complaint: they stay away
    elif goal == "review" and s.grievance:
        hours = rng.uniform(6 * 24, 30 * 24)
    else:
        mean_days = _MEAN_GAP_DAYS[s.archetype] * (1.6 if goal == "buy" else 1.0)
        hours = rng.expovariate(1 / (mean_days * 24))
    return max(MIN_SESSION_GAP_MS, int(hours * HOUR_MS))


def _leave_chance(s: _Shopper, goal: str, lapse_progress: float) -> float:
    """Chance that this session is the user's last one in the simulation."""
    p = _BASE_LEAVE[s.archetype] + 0.25 * lapse_progress
    if goal == "bounce":
        p += 0.12
    if s.asked_to_quit:
        p += 0.6
    if goal in ("support", "review") and s.grievance:
        p += 0.3  # left with an unresolved problem
    return min(p, 0.95)


def _daytime(t: int, rng: random.Random) -> int:
    """Shops are quiet at night: a visit drawn at 01:00-07:00 UTC moves to the morning."""
    hour = (t // HOUR_MS) % 24
    if 1 <= hour < 7:
        t += (7 - hour) * HOUR_MS + rng.randrange(0, 3 * HOUR_MS)
    return t


def simulate_user(index: int, config: SimConfig = SimConfig()) -> UserHistory:
    """The history of user `index` (independent of every other user)."""
    rng = random.Random(f"user:{config.seed}:{index}")
    catalog = build_catalog(config.catalog_seed)
    archetype = rng.choices(ARCHETYPES, ARCHETYPE_WEIGHTS)[0]
    s = _Shopper(
        user_id=f"u{config.seed}-{index:06d}",
        archetype=archetype,
        rng=rng,
        catalog=catalog,
        t=config.start_ms + rng.randrange(0, 3 * DAY_MS),
        interest=rng.randrange(len(PRODUCT_TYPES)),
    )
    if archetype == "support_seeker":
        # They come with an order placed before the simulation started.
        product = s.random_of_type(s.interest)
        s.orders.append((str(rng.randrange(100_000, 999_999)), product))
        s.grievance = rng.random() < 0.5
    lapse_at = None
    if archetype == "lapsing":
        lapse_at = config.start_ms + int(rng.uniform(4, 22) * DAY_MS)
    if archetype in ("comparer", "decided_buyer"):
        s.readiness = rng.uniform(0.3, 0.6) if archetype == "decided_buyer" else 0.1
    sessions: list[SessionTruth] = []
    s.t = _daytime(s.t, rng)
    while s.t < config.end_ms:
        if lapse_at is not None and s.t >= lapse_at:
            break  # lapsed: silent for the rest of the simulation
        progress = 0.0 if lapse_at is None else 1 - (lapse_at - s.t) / (lapse_at - config.start_ms)
        goal = _choose_goal(s, max(0.0, progress))
        start, s.needs, s.asked_to_quit = s.t, [], False
        _SCRIPTS[goal](s)
        end = s.events[-1]["ts"]
        sessions.append(SessionTruth(start, end, goal, tuple(s.needs)))
        if rng.random() < _leave_chance(s, goal, max(0.0, progress)):
            break  # gone: silent for the rest of the simulation
        s.t = _daytime(end + _next_gap_ms(s, goal), rng)
    events = tuple(e for e in s.events if e["ts"] < config.end_ms)
    return UserHistory(
        user_id=s.user_id,
        archetype=archetype,
        events=events,
        sessions=tuple(x for x in sessions if x.start < config.end_ms),
        observed_until=config.end_ms,
    )


def simulate(n_users: int, config: SimConfig = SimConfig()) -> list[UserHistory]:
    return [simulate_user(i, config) for i in range(n_users)]


def event_stream(n_users: int, config: SimConfig = SimConfig()) -> Iterator[dict[str, Any]]:
    """All events of users 0..n_users-1 in event-time order (ties by event id): a live source."""
    histories = simulate(n_users, config)
    return heapq.merge(*(h.events for h in histories), key=lambda e: (e["ts"], e["event_id"]))


def known_labels(
    history: UserHistory, window_end: int, policy: LabelPolicy = DEFAULT_LABEL_POLICY
) -> WindowLabels:
    """The outcome labels of the user's window ending at `window_end`, from the full history.

    The window's own events are those of its session up to `window_end`; this reads only the
    events after it for strength and churn (see `streams.core.labelling`).
    """
    session = next(
        (x for x in history.sessions if x.start <= window_end <= x.end), None
    )
    start = session.start if session else window_end
    window = [e for e in history.events if start <= e["ts"] <= window_end]
    return label_window(window, window_end, history.events, history.observed_until, policy)
