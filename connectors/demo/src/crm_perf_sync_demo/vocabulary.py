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

#: The industry of an account, by the kind of business its name ends with (ACCOUNT_KINDS).
INDUSTRIES: Final = {
    "Logistics": "Transportation & Logistics",
    "Health": "Healthcare",
    "Foods": "Food & Beverage",
    "Energy": "Energy & Utilities",
    "Systems": "Technology",
    "Capital": "Financial Services",
    "Retail": "Retail",
    "Manufacturing": "Manufacturing",
    "Media": "Media & Entertainment",
    "Pharma": "Life Sciences",
    "Software": "Technology",
    "Insurance": "Insurance",
}

#: Account segments with their share of accounts, smallest share first.
ACCOUNT_SEGMENTS: Final = (("Enterprise", 0.15), ("Mid-Market", 0.35), ("SMB", 0.50))

#: What a rep does on an account, with its share of the activities on a deal: (type, the CRM's
#: own kind of it, share). Proposals are not drawn: one comes with each deal reaching Proposal.
ACTIVITY_KINDS: Final = (
    ("call", "Outbound call", 0.30),
    ("email", "Email", 0.28),
    ("meeting", "Video meeting", 0.12),
    ("meeting", "Product demo", 0.08),
    ("visit", "On-site visit", 0.14),
    ("task", "Follow-up task", 0.08),
)

#: How a call ended, with its share of calls.
CALL_OUTCOMES: Final = (("Connected", 0.55), ("Left voicemail", 0.25), ("No answer", 0.20))
