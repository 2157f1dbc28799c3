# The ActiveRecord store, driven from the command line, on SQLite or on Postgres.
#
#     ruby app.rb DB migrate [VERSION]    apply the migrations in migrations/ (VERSION: e.g. 20250101000001)
#     ruby app.rb DB seed N               N products with reviews and tags, written through the models
#     ruby app.rb DB churn SEED N         N write transactions of the app's usual shapes
#     ruby app.rb DB reads                the app's read queries, answers as JSON
#     ruby app.rb DB dump                 every row of every model through the models, as JSON
#     ruby app.rb DB writes               the app's write paths; exit 1 if one fails
#
# DB is a SQLite path or a postgresql:// URL. Plain ActiveRecord (no Rails skeleton): the models
# read their columns from the database, so the same code serves both schema versions.

require "active_record"
require "bigdecimal"
require "date"
require "json"
require "securerandom"

HERE = File.expand_path(__dir__)

module Store_
  def self.connect(db)
    if db.start_with?("postgres")
      ActiveRecord::Base.establish_connection(db)
    else
      ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: db, timeout: 20_000)
    end
    ActiveRecord::Base.logger = nil
    ActiveRecord::Base.default_timezone = :utc
    ActiveRecord::Migration.verbose = false
  end

  def self.pg?
    ActiveRecord::Base.connection.adapter_name == "PostgreSQL"
  end

  # A key of a JSON column as text, in each adapter's SQL (ActiveRecord 6.1 has no portable form).
  def self.json_text(column, key)
    pg? ? "#{column}->>'#{key}'" : "json_extract(#{column}, '$.#{key}')"
  end

  def self.json_has(column, key)
    pg? ? "jsonb_exists(#{column}, '#{key}')" : "json_type(#{column}, '$.#{key}') IS NOT NULL"
  end
end

class Store < ActiveRecord::Base
  has_many :products, dependent: :destroy
end

class Product < ActiveRecord::Base
  belongs_to :store
  has_many :reviews, dependent: :destroy
  has_many :taggings  # ON DELETE CASCADE in the database
  has_many :tags, through: :taggings
end

class Tag < ActiveRecord::Base
  has_many :taggings
  has_many :products, through: :taggings
end

class Tagging < ActiveRecord::Base
  belongs_to :product
  belongs_to :tag
end

class Review < ActiveRecord::Base
  belongs_to :product
end

MODELS = [Store, Product, Tag, Tagging, Review].freeze

def migrate(version)
  context = ActiveRecord::MigrationContext.new([File.join(HERE, "migrations")],
                                               ActiveRecord::SchemaMigration)
  context.migrate(version && Integer(version, 10))
end

def seed(n)
  rng = Random.new(11)
  base = Time.utc(2025, 1, 1)
  ActiveRecord::Base.transaction do
    tags = %w[new sale eco gift bulk].map { |t| Tag.create!(name: t) }
    stores = (0...6).map do |i|
      Store.create!(name: "Store #{i} «ünïcode»", uid: SecureRandom.uuid,
                    settings: { "theme" => %w[dark light][i % 2], "i" => i, "ratio" => i / 7.0 })
    end
    products = (0...n).map do |i|
      p = Product.create!(
        store: stores[rng.rand(stores.size)], sku: format("SKU-%04d", i),
        title: "Product #{i} \"quoted\" ünï", price: BigDecimal(rng.rand(100..99_999)) / 100,
        active: rng.rand < 0.8,
        released_on: i % 4 == 0 ? nil : Date.new(1995, 1, 1) + rng.rand(0..12_000),
        restocked_at: base + rng.rand(0..10_000_000) + [0, 0.123456r].sample(random: rng),
        meta: { "color" => %w[red green blue][rng.rand(3)], "n" => i,
                "tags" => %w[a b][0, i % 3] }.reject { |k, _| k == "tags" && i.odd? },
        stock: rng.rand(0..500))
      p.tags = tags.sample(rng.rand(0..3), random: rng)
      rng.rand(0..3).times do |k|
        p.reviews.create!(rating: rng.rand(1..5),
                          body: k.zero? && i % 5 == 0 ? "tab\there\nnewline" : "Review #{k} of #{i}")
      end
      p
    end
    # Prices raised through the database, as apps do: float arithmetic in SQLite's REAL storage
    # leaves digits beyond the declared scale (930.1899999999999).
    Product.where(id: products.each_slice(3).map(&:first).map(&:id)).update_all("price = price + 0.01")
    # Exact halves, where frameworks disagree: ActiveRecord reads 0.125 as 0.13 (half-up),
    # Django as 0.12 (half-even). Postgres must hold what this app reads.
    products.last(3).zip([0.125, 1.005, 12.345]).each do |p, v|
      Product.where(id: p.id).update_all("price = #{v}")
    end
  end
end

def churn(seed_, n)
  rng = Random.new(seed_)
  n.times do |i|
    ActiveRecord::Base.transaction do
      case i % 6
      when 0
        p = Product.create!(store: Store.order(Arel.sql("RANDOM()")).first,
                            sku: "N-#{seed_}-#{i}", title: "New #{seed_}-#{i}",
                            price: BigDecimal(rng.rand(100..9_999)) / 100, active: true,
                            restocked_at: Time.now.utc, meta: { "color" => "red", "source" => "churn" })
        p.reviews.create!(rating: 5, body: "first!")
        p.tags << Tag.order(Arel.sql("RANDOM()")).first
      when 1
        s = Store.order(Arel.sql("RANDOM()")).first
        s.update!(settings: s.settings.merge("theme" => %w[dark light solar][rng.rand(3)]))
        p = Product.order(Arel.sql("RANDOM()")).first
        p.update!(active: !p.active, stock: p.stock + 1)
      when 2
        Product.where(id: Product.order(Arel.sql("RANDOM()")).first.id)
               .update_all("price = price + 0.01")
      when 3
        victim = Product.where("sku LIKE 'N-%'").order(Arel.sql("RANDOM()")).first
        victim&.destroy!  # reviews by dependent: :destroy, taggings by ON DELETE CASCADE
      when 4
        p = Product.order(Arel.sql("RANDOM()")).first
        tag = Tag.order(Arel.sql("RANDOM()")).first
        p.tags << tag unless p.tags.include?(tag)
        p.tags.delete(Tag.order(Arel.sql("RANDOM()")).first)
      else
        Review.order(:id).limit(3).offset(rng.rand(0..20)).each do |r|
          r.update!(rating: rng.rand(1..5), body: "edited #{seed_}-#{i}")
        end
      end
    end
  end
end

def reads
  j = Store_
  first = Store.order(:id).first
  {
    "stores" => Store.count,
    "products" => Product.count,
    "by_uid" => Store.find_by!(uid: first.uid).name,
    "dark_stores" => Store.where("#{j.json_text('settings', 'theme')} = ?", "dark").count,
    "red_products" => Product.where("#{j.json_text('meta', 'color')} = ?", "red").count,
    "meta_has_tags" => Product.where(j.json_has("meta", "tags")).count,
    "active" => Product.where(active: true).count,
    "inactive" => Product.where(active: false).count,
    "released_before_2010" => Product.where("released_on < ?", Date.new(2010, 1, 1)).count,
    "never_released" => Product.where(released_on: nil).count,
    "restocked_march" => Product.where(restocked_at: Time.utc(2025, 3, 1)...Time.utc(2025, 4, 1)).count,
    "restocked_range" => [Product.minimum(:restocked_at), Product.maximum(:restocked_at)]
      .map { |t| t&.utc&.iso8601(6) },
    "prices" => Product.order(:sku).pluck(:sku, :price).map { |s, p| [s, p.to_s("F")] },
    "expensive" => Product.where("price > ?", BigDecimal("500.00")).count,
    "price_total" => Product.sum(:price).to_s("F"),
    "stock_total" => Product.sum(:stock),
    "tags_per_product" => Product.left_joins(:taggings).group("products.id", "products.sku")
      .order("products.sku").limit(10).pluck("products.sku", Arel.sql("count(taggings.id)")),
    "sale_products" => Tag.find_by!(name: "sale").products.count,
    "reviews_by_rating" => Review.group(:rating).order(:rating).count,
    "top_stores" => Store.left_joins(:products).group("stores.id", "stores.name")
      .order(Arel.sql("count(products.id) DESC, stores.id")).limit(5)
      .pluck("stores.name", Arel.sql("count(products.id)")),
    "reviews_with_tab" => Review.where("body LIKE ?", "%\t%").count,
    "first_titles" => Product.order(:title).limit(5).pluck(:title),
  }
end

# Every value in the app's own meaning, tagged with its Ruby class where JSON would blur it.
def plain(v)
  case v
  when BigDecimal then "BigDecimal:#{v.to_s('F')}"
  when ActiveSupport::TimeWithZone, Time then "Time:#{v.utc.iso8601(6)}"
  when Date then "Date:#{v.iso8601}"
  when Float then "Float:#{v}"
  else v
  end
end

def dump
  MODELS.to_h do |model|
    [model.name, model.order(:id).map { |r| r.attributes.transform_values { |v| plain(v) } }]
  end
end

def writes
  checks = {}
  check = lambda do |name, &fn|
    fn.call
    checks[name] = "ok"
  rescue StandardError => e
    checks[name] = "#{e.class}: #{e.message}"
  end

  check.call("create") do
    s = Store.create!(name: "After", uid: SecureRandom.uuid, settings: { "theme" => "dark" })
    p = s.products.create!(sku: "AFTER-1", title: "After", price: BigDecimal("1.00"),
                           restocked_at: Time.now.utc, meta: { "color" => "red" })
    p.reviews.create!(rating: 4, body: "after the move")
    Tag.create!(name: "after")
  end
  check.call("update") do
    p = Product.order(:id).first
    p.update!(title: "Renamed")
    before = p.price
    Product.where(id: p.id).update_all("price = price + 1")
    raise "price #{p.reload.price} after +1 from #{before}" unless p.reload.price == before + 1
  end
  check.call("uuid_lookup") do
    s = Store.order(:id).last
    raise "uid lookup" unless Store.find_by!(uid: s.uid).id == s.id
  end
  check.call("json_lookup") do
    red = Product.where("#{Store_.json_text('meta', 'color')} = ?", "red")
    red.update_all(active: true)
    raise "json update" unless red.count.positive? && red.where(active: false).count.zero?
  end
  check.call("m2m") do
    p = Product.find_by!(sku: "AFTER-1")
    p.tags << Tag.find_by!(name: "after")
    p.tags << Tag.find_by!(name: "sale")
    raise "m2m" unless p.tags.where(name: "after").exists? && Tag.find_by!(name: "after").products.include?(p)
  end
  check.call("cascade_delete") do
    s = Store.find_by!(name: "After")
    ids = s.products.ids
    s.destroy!
    left = [Product.where(id: ids).count, Review.where(product_id: ids).count,
            Tagging.where(product_id: ids).count]
    raise "left behind: #{left}" unless left == [0, 0, 0]
  end
  checks
end

def main(argv)
  db, command, *rest = argv
  Store_.connect(db)
  case command
  when "migrate" then migrate(rest[0])
  when "seed" then seed(Integer(rest[0]))
  when "churn" then churn(Integer(rest[0]), Integer(rest[1]))
  when "reads" then puts JSON.generate(reads)
  when "dump" then puts JSON.generate(dump)
  when "writes"
    checks = writes
    puts JSON.generate(checks)
    return checks.values.all?("ok") ? 0 : 1
  else
    warn "unknown command #{command.inspect}"
    return 2
  end
  0
end

exit(main(ARGV)) if $PROGRAM_NAME == __FILE__
