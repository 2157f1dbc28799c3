# The store's first schema, as a Rails app writes it. Portable across adapters the way apps that
# run on both do it: jsonb and uuid on Postgres, json and a string on SQLite.
class CreateStore < ActiveRecord::Migration[6.1]
  def change
    pg = connection.adapter_name == "PostgreSQL"

    create_table :stores do |t|
      t.string :name, null: false
      t.column :uid, pg ? :uuid : :string, null: false, index: { unique: true }
      t.column :settings, pg ? :jsonb : :json, null: false
      t.timestamps
    end

    create_table :products do |t|
      t.references :store, null: false, foreign_key: true
      t.string :sku, limit: 20, null: false, index: { unique: true }
      t.string :title, null: false
      t.decimal :price, precision: 10, scale: 2, null: false
      t.boolean :active, null: false, default: true
      t.date :released_on
      t.datetime :restocked_at
      t.column :meta, pg ? :jsonb : :json
      t.integer :stock, null: false, default: 0
      t.timestamps
    end

    create_table :tags do |t|
      t.string :name, limit: 30, null: false, index: { unique: true }
    end

    # has_many :through (a join model with its own id); the database cascades the deletes.
    create_table :taggings do |t|
      t.references :product, null: false, foreign_key: { on_delete: :cascade }
      t.references :tag, null: false, foreign_key: { on_delete: :cascade }
      t.index [:product_id, :tag_id], unique: true
    end

    create_table :reviews do |t|
      t.references :product, null: false, foreign_key: true
      t.integer :rating, null: false
      t.text :body
      t.timestamps
    end
  end
end
