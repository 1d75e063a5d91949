"""Fixed word lists the synthetic company draws its names from.

They are part of the generated data: changing one changes every record of every seed, so treat
them like test fixtures (append-only if a change must be made).
"""

from __future__ import annotations

from typing import Final

FIRST_NAMES: Final = (
    "Maria", "James", "Aisha", "Liam", "Sofia", "Noah", "Chen", "Olivia", "Mateo", "Priya",
    "Lucas", "Emma", "Hiroshi", "Amara", "Ethan", "Ines", "Kwame", "Hannah", "Diego", "Yara",
    "Oliver", "Fatima", "Jonas", "Elena", "Ravi", "Chloe", "Tomasz", "Leila", "Samuel", "Mei",
    "Daniel", "Zara", "Felix", "Nadia", "Arjun", "Grace", "Marco", "Ingrid", "Omar", "Julia",
)  # fmt: skip

LAST_NAMES: Final = (
    "Garcia", "Smith", "Okafor", "Nguyen", "Rossi", "Kowalski", "Tanaka", "Meyer", "Silva", "Patel",
    "Johnson", "Dubois", "Andersen", "Haddad", "Kim", "Martinez", "Brown", "Schneider", "Costa", "Ali",
    "Walker", "Novak", "Fischer", "Lopez", "Ivanova", "Mensah", "Wright", "Bianchi", "Sato", "Khan",
    "Murphy", "Larsen", "Moreau", "Reyes", "Cohen", "Nowak", "Evans", "Yilmaz", "Hughes", "Chowdhury",
)  # fmt: skip

# Accounts are named prefix + core + kind; 30 x 30 x 12 = 10,800 distinct names before a numeric
# suffix is needed.
ACCOUNT_PREFIXES: Final = (
    "Blue", "North", "Silver", "Bright", "Iron", "Green", "Summit", "Clear", "Red", "Atlas",
    "Harbor", "Pioneer", "Granite", "Swift", "Golden", "Cedar", "Polar", "Vertex", "Oak", "Lumen",
    "Coastal", "Prime", "Union", "Metro", "Delta", "Crystal", "Falcon", "Aurora", "Beacon", "Keystone",
)  # fmt: skip

ACCOUNT_CORES: Final = (
    "River", "Peak", "Stone", "Field", "Bridge", "Wave", "Forge", "Point", "Ridge", "Line",
    "Gate", "Works", "Path", "Light", "Labs", "Spring", "Crest", "Port", "Grove", "Star",
    "Mill", "Dale", "Rock", "Bay", "Haven", "Hill", "Wind", "Lake", "Shore", "Vale",
)  # fmt: skip

ACCOUNT_KINDS: Final = (
    "Logistics", "Health", "Foods", "Energy", "Systems", "Capital", "Retail", "Manufacturing",
    "Media", "Pharma", "Software", "Insurance",
)  # fmt: skip

PRODUCTS: Final = (
    "Platform License", "Analytics Add-on", "Onboarding Services", "Premium Support",
    "Data Connectors", "Enterprise Suite", "Team Seats", "Compliance Pack",
)  # fmt: skip

REGION_NAMES: Final = ("North America", "EMEA", "APAC", "LATAM", "ANZ", "Nordics", "DACH", "India")

TEAM_SEGMENTS: Final = ("Enterprise", "Mid-Market", "SMB", "Strategic", "Inside Sales", "Channel")

#: Where leads come from, with their share of all leads.
LEAD_SOURCES: Final = (
    ("Web", 0.30),
    ("Outbound", 0.20),
    ("Paid Search", 0.13),
    ("Event", 0.12),
    ("Referral", 0.15),
    ("Partner", 0.10),
)

#: Sources a rep records on a New Business deal that did not come through a lead.
DIRECT_SOURCES: Final = ("Outbound", "Event", "Partner", "Referral")

COMPANY_DOMAIN: Final = "demo-sales.example"
