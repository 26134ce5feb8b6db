"""A synthetic product catalog: realistic titles, categories and prices, built from a seed. Pure.

Brands are invented (no real product data is implied). Each product type has its own price band
and attributes, so titles read like a shop's listing ("Auralis Wireless Over-Ear Headphones")
and search queries can refine from a type to an attribute, a brand and a price cap.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProductType:
    category: str
    noun: str  # plural-free shop noun, used in titles and queries
    attributes: tuple[str, ...]
    price_band: tuple[float, float]  # typical low/high price, EUR
    uses: tuple[str, ...]  # what shoppers ask advice for ("for running")


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: str
    category: str
    price: float
    type_index: int  # index into PRODUCT_TYPES
    brand: str
    attribute: str

    def as_item(self) -> dict[str, object]:
        """The `item` object of a `ShopEvent`."""
        return {"id": self.id, "title": self.title, "category": self.category, "price": self.price}


PRODUCT_TYPES: tuple[ProductType, ...] = (
    ProductType("audio", "headphones", ("wireless", "noise cancelling", "over-ear", "kids"),
                (25, 380), ("the gym", "flights", "working from home")),
    ProductType("audio", "bluetooth speaker", ("waterproof", "portable", "smart"),
                (20, 250), ("the garden", "parties")),
    ProductType("audio", "earbuds", ("true wireless", "sport", "noise cancelling"),
                (15, 280), ("running", "commuting")),
    ProductType("computers", "laptop", ('14"', '16"', "ultralight", "gaming"),
                (380, 2400), ("university", "video editing", "gaming")),
    ProductType("computers", "monitor", ('27" 4K', '24" IPS', "curved ultrawide"),
                (110, 900), ("photo editing", "gaming", "office work")),
    ProductType("computers", "mechanical keyboard", ("wireless", "compact", "RGB"),
                (40, 220), ("programming", "gaming")),
    ProductType("phones", "smartphone", ("128GB", "256GB", "5G", "dual SIM"),
                (150, 1300), ("photography", "a teenager")),
    ProductType("phones", "phone case", ("clear", "leather", "rugged"),
                (8, 60), ("hiking", "everyday use")),
    ProductType("phones", "fast charger", ("65W USB-C", "wireless", "3-port"),
                (12, 80), ("travel", "a laptop and phone")),
    ProductType("kitchen", "coffee machine", ("espresso", "bean-to-cup", "filter"),
                (45, 900), ("a small office", "latte lovers")),
    ProductType("kitchen", "blender", ("high-speed", "personal", "immersion"),
                (25, 400), ("smoothies", "soups")),
    ProductType("kitchen", "chef knife", ("8-inch", "damascus", "santoku"),
                (20, 250), ("a beginner cook", "vegetables")),
    ProductType("home", "robot vacuum", ("self-emptying", "mopping", "compact"),
                (150, 1100), ("pet hair", "a large flat")),
    ProductType("home", "duvet", ("all-season", "summer", "hypoallergenic"),
                (30, 220), ("allergies", "a hot bedroom")),
    ProductType("home", "desk lamp", ("LED", "dimmable", "clamp"),
                (15, 120), ("reading", "a home office")),
    ProductType("fashion", "rain jacket", ("waterproof", "packable", "insulated"),
                (40, 320), ("hiking", "city commuting")),
    ProductType("fashion", "jeans", ("slim fit", "relaxed fit", "stretch"),
                (30, 160), ("work", "everyday wear")),
    ProductType("shoes", "running shoes", ("trail", "cushioned", "lightweight"),
                (45, 220), ("marathon training", "flat feet")),
    ProductType("shoes", "sneakers", ("leather", "canvas", "high-top"),
                (35, 180), ("everyday wear", "walking")),
    ProductType("beauty", "face serum", ("vitamin C", "hyaluronic", "retinol"),
                (9, 95), ("dry skin", "sensitive skin")),
    ProductType("beauty", "hair dryer", ("ionic", "travel", "diffuser"),
                (20, 420), ("curly hair", "travel")),
    ProductType("sports", "yoga mat", ("non-slip", "6mm", "travel"),
                (12, 110), ("hot yoga", "pilates")),
    ProductType("sports", "dumbbell set", ("adjustable", "neoprene", "20kg"),
                (25, 350), ("a home gym", "beginners")),
    ProductType("toys", "building set", ("space", "city", "technic"),
                (12, 260), ("an 8 year old", "adults")),
    ProductType("books", "cookbook", ("vegan", "baking", "quick dinners"),
                (9, 45), ("a beginner cook", "a gift")),
    ProductType("garden", "garden hose", ("expandable", "30m", "reel"),
                (15, 120), ("a small balcony", "a large garden")),
)

BRANDS: dict[str, tuple[str, ...]] = {
    "audio": ("Auralis", "Sonique", "Bassline", "Tonewood"),
    "computers": ("Northbyte", "Keyforge", "Lumatek", "Vantix"),
    "phones": ("Orbita", "Pixelon", "Voltway", "Shieldo"),
    "kitchen": ("Kitchara", "Brewmont", "Steelcraft", "Mixwell"),
    "home": ("Dormio", "Cleanbot", "Lumen & Co", "Nestwell"),
    "fashion": ("Trailmark", "Denimhaus", "Stormline"),
    "shoes": ("Stridex", "Pacefield", "Urbanstep"),
    "beauty": ("Glowlab", "Purefolia", "Airluxe"),
    "sports": ("Flexfit", "Ironcore", "Zenmat"),
    "toys": ("Brickverse", "Playforge"),
    "books": ("Hearth Press", "Greenleaf Books"),
    "garden": ("Verdant", "Hoseline"),
}
COLOURS = ("black", "white", "grey", "navy", "green", "red", "silver", "beige")
PRODUCTS_PER_TYPE = 12


def _price(rng: random.Random, band: tuple[float, float]) -> float:
    # Log-uniform inside the band, then shop-style endings (.99 / .49 / .00).
    low, high = band
    raw = math.exp(rng.uniform(math.log(low), math.log(high)))
    whole = max(1, int(raw))
    return whole + rng.choice((0.99, 0.99, 0.49, 0.0))


def build_catalog(seed: int = 7) -> tuple[Product, ...]:
    """The catalog for `seed`: PRODUCTS_PER_TYPE products of every product type."""
    rng = random.Random(f"catalog:{seed}")
    products: list[Product] = []
    for type_index, kind in enumerate(PRODUCT_TYPES):
        for n in range(PRODUCTS_PER_TYPE):
            brand = rng.choice(BRANDS[kind.category])
            attribute = rng.choice(kind.attributes)
            title = f"{brand} {attribute.capitalize()} {kind.noun.capitalize()}"
            if rng.random() < 0.4:  # a colour variant, as listings often carry one
                title += f", {rng.choice(COLOURS).capitalize()}"
            products.append(
                Product(
                    id=f"sku-{type_index:02d}{n:02d}{rng.randrange(100, 999)}",
                    title=title,
                    category=kind.category,
                    price=_price(rng, kind.price_band),
                    type_index=type_index,
                    brand=brand,
                    attribute=attribute,
                )
            )
    return tuple(products)


def products_of_type(catalog: tuple[Product, ...], type_index: int) -> list[Product]:
    return [p for p in catalog if p.type_index == type_index]
